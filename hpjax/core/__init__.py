"""Plumbing both papers share: the training loop, the device mesh, configs, statistics, I/O, the CLI."""
