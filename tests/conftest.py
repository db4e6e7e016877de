"""Test-wide setup: 4 forced CPU devices (multi-device logic is tested on one host).

Set before JAX is imported anywhere, so every test sees the same 4 devices and
compiled functions are shared across tests.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
