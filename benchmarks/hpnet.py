"""HPNet throughput, memory and compile time: JAX (the library) against PyTorch, as ratios.

Run through the harness (``python -m benchmarks --suites hpnet,pruning``) or alone
(``python -m benchmarks.hpnet [--quick]``); ``python -m benchmarks.hpnet --profile``
prints the train step's most expensive XLA ops (the CPU runtime's per-op trace).

What one configuration measures, each framework in a fresh subprocess so that its
peak resident memory (``VmHWM``) is its own:

* inference (``train=False`` / ``model.eval()``) images/s, then training images/s
  of one full optimizer step (forward, Eq. 10 loss, backward, Adam);
* the first step's time (JAX: ``lower().compile()`` plus the first execution;
  ``torch.compile``: the first call, which compiles) and, for JAX, XLA's own buffer
  accounting (``compiled.memory_analysis()``);
* peak RSS after the inference part and after the training part (the process
  peak: it includes the framework's runtime and, for JAX, the compiler's memory).

The JAX step is the real library: :func:`hpjax.core.training.create_train_state`,
:func:`hpjax.core.training.train_step` with :func:`hpjax.hpnet.experiment.make_loss_fn`
(:func:`hpjax.hpnet.losses.attribute_loss`) and :func:`hpjax.core.training.make_optimizer`
(Adam), jitted as :func:`hpjax.core.training.fit` does (no buffer donation). PyTorch runs
:mod:`benchmarks.torch_hpnet` (the same architecture) with
``torch.set_num_threads`` = the JAX thread count, eager and ``torch.compile``.

Timing: warm-up calls first, then timed calls each ending in ``block_until_ready``
(``torch.cuda.synchronize`` on a GPU) until ``min_time`` seconds and ``min_steps``
calls have passed; the median and the best call are reported.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

PAPER_FEATURES = (32, 64, 64, 128)
PAPER_DILATIONS = (1, 2, 3, 2)


@dataclasses.dataclass(frozen=True)
class Shape:
  """One benchmark configuration."""
  size: int                       # images are size × size
  channels: int                   # image channels
  num_attributes: int             # K
  batch: int = 32
  features: tuple[int, ...] = PAPER_FEATURES
  dilations: tuple[int, ...] = PAPER_DILATIONS

  @property
  def name(self) -> str:
    return f"{self.size}x{self.size}x{self.channels}_K{self.num_attributes}"


FULL_SHAPES = (Shape(28, 1, 10), Shape(32, 3, 40), Shape(64, 3, 40))
# Model variants: "hpnet" (float32, the default), "hpnet_bf16" (the heads' GEMM operands
# in bfloat16, float32 accumulation; the opt-in HPNet(head_matmul_dtype="bfloat16"), with
# the same change in PyTorch), "baseline" (extractor + GAP + dense).
# A "_xla_dw" suffix (JAX only) leaves the extractor's conv weight gradients to XLA instead of
# the GEMM form hpjax uses on CPU (hpjax/hpnet/conv.py): the before/after of that change.
MODEL_MATMUL_DTYPE = {"hpnet": None, "hpnet_bf16": "bfloat16"}
XLA_DW = "_xla_dw"
JAX_ONLY = ("hpnet" + XLA_DW, "baseline" + XLA_DW)
QUICK_SHAPES = (Shape(12, 1, 3, batch=4, features=(4, 8, 8, 8)),)


def forward_flops(shape: Shape, model: str = "hpnet", features: Sequence[int] | None = None
                  ) -> int:
  """Analytic forward multiply-add FLOPs (×2) per image: extractor convs + the K heads.

  Counts the 3×3 convs (2·9·C_in·C_out per position) and, for HPNet, the heads' mask
  1×1 convs (2·K·C² per position); BatchNorm, activations, sigmoids, the pool and the
  classifiers are elementwise or O(K·C) and left out.
  """
  features = tuple(features or shape.features)
  hw = shape.size * shape.size
  cin, total = shape.channels, 0
  for cout in features:
    total += 2 * 9 * cin * cout * hw
    cin = cout
  if model.startswith("hpnet"):
    total += 2 * hw * shape.num_attributes * features[-1] ** 2
  return total


def _time_calls(fn: Callable[[], Any], *, warmup: int, min_steps: int, max_steps: int,
                min_time: float) -> list[tuple[float, float]]:
  """``(wall, cpu)`` seconds per call of ``fn`` (which must block) after ``warmup`` calls.

  CPU seconds are the whole process's (every thread): on a shared machine they move
  much less with the load than wall time, so rates per CPU-second are reported too.
  """
  for _ in range(warmup):
    fn()
  times: list[tuple[float, float]] = []
  start = time.perf_counter()
  while len(times) < max_steps and (len(times) < min_steps or time.perf_counter() - start < min_time):
    t, c = time.perf_counter(), time.process_time()
    fn()
    times.append((time.perf_counter() - t, time.process_time() - c))
  return times


def _train_timing(one: Callable[[], None], holder: dict[str, Any], timing: dict[str, Any]
                  ) -> tuple[float, float, list[tuple[float, float]]]:
  """Times ``one`` (a blocking train step that leaves its loss in ``holder["loss"]``):
  ``(first call s, first loss, timed calls)``; the first call includes any compilation."""
  t = time.perf_counter()
  one()
  first = time.perf_counter() - t
  first_loss = holder["loss"]
  return first, first_loss, _time_calls(one, **timing)


def _rate(times: list[tuple[float, float]], batch: int) -> dict[str, Any]:
  wall = [w for w, _ in times]
  cpu = [c for _, c in times]
  med = statistics.median(wall)
  return {"steps": len(times), "step_s_median": round(med, 5), "step_s_best": round(min(wall), 5),
          "images_per_s": round(batch / med, 3), "images_per_s_best": round(batch / min(wall), 3),
          "cpu_s_per_step_median": round(statistics.median(cpu), 5),
          "images_per_cpu_s": round(batch / statistics.median(cpu), 3)}


def _peak_rss_mb() -> float:
  """This process's peak resident set size in MiB.

  Linux's ``VmHWM`` first: ``ru_maxrss`` survives ``fork`` + ``exec``, so a worker started
  by a big parent would report the parent's peak (seen: every worker read 1324 MiB).
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return round(int(line.split()[1]) / 1024, 1)  # kB
  except OSError:
    pass
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _batch(shape: Shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (shape.batch, shape.size, shape.size, shape.channels), np.uint8)
  labels = rng.integers(0, 2, (shape.batch, shape.num_attributes)).astype(np.int32)
  return images, labels


# ---------------------------------------------------------------------------
# Workers (each runs in its own process).

def _jax_model(name: str, shape: Shape) -> Any:
  """The library's model for a benchmark variant name (see ``MODEL_MATMUL_DTYPE``)."""
  from hpjax.hpnet.model import BaselineNet, HPNet

  weight_grad = "xla" if name.endswith(XLA_DW) else "auto"
  name = name.removesuffix(XLA_DW)
  if name == "baseline":
    return BaselineNet(shape.num_attributes, shape.features, shape.dilations,
                       conv_weight_grad=weight_grad)
  return HPNet(shape.num_attributes, shape.features, shape.dilations,
               head_matmul_dtype=MODEL_MATMUL_DTYPE[name], conv_weight_grad=weight_grad)


def jax_worker(spec: dict[str, Any]) -> dict[str, Any]:
  """Inference then training of the library's HPNet/BaselineNet; see the module docstring."""
  import jax
  import jax.numpy as jnp

  from hpjax.core import training
  from hpjax.hpnet.experiment import make_loss_fn
  from hpjax.hpnet.config import AttributesConfig

  shape = Shape(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["shape"].items()})
  timing = spec["timing"]
  model = _jax_model(spec["model"], shape)
  image_shape = (shape.size, shape.size, shape.channels)
  # l1_reduction="sum": the same loss as the PyTorch twin (the reduction costs nothing).
  config = AttributesConfig(features=shape.features, dilations=shape.dilations,
                            batch_size=shape.batch, image_size=shape.size, l1_reduction="sum")
  tx = training.make_optimizer(config.learning_rate, config.warmup_steps, config.num_steps)
  state = training.create_train_state(model, tx, image_shape, seed=0)
  images, labels = _batch(shape)
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
  out: dict[str, Any] = {"framework": "jax", "mode": "jit", "model": spec["model"],
                         "shape": shape.name, "stream_heads": getattr(model, "stream_heads", None)}

  # Inference first, so the peak RSS read after it is the inference peak.
  infer = jax.jit(lambda v, x: model.apply(v, training.images_to_float(x), train=False)[0])
  t = time.perf_counter()
  infer_c = infer.lower(state.variables, batch["image"]).compile()
  compile_s = time.perf_counter() - t
  times = _time_calls(lambda: infer_c(state.variables, batch["image"]).block_until_ready(),
                      **timing["inference"])
  out["inference"] = {**_rate(times, shape.batch), "compile_s": round(compile_s, 3),
                      "xla_memory": _memory(infer_c)}
  out["peak_rss_mb_after_inference"] = _peak_rss_mb()

  step = jax.jit(functools.partial(training.train_step,
                                   loss_fn=make_loss_fn(config, image_shape, shape.num_attributes)))
  t = time.perf_counter()
  step_c = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  holder = {"state": state}

  def one():
    holder["state"], metrics = step_c(holder["state"], batch)
    jax.block_until_ready((holder["state"], metrics))
    holder["loss"] = float(metrics["loss"])

  first_exec, first_loss, times = _train_timing(one, holder, timing["train"])
  out["train"] = {**_rate(times, shape.batch), "compile_s": round(compile_s, 3),
                  "first_step_s": round(compile_s + first_exec, 3),
                  "loss_first": first_loss, "loss_last": holder["loss"],
                  "xla_memory": _memory(step_c)}
  out["peak_rss_mb"] = _peak_rss_mb()
  # The matmul ceiling again, in this process right after the steps: on a shared machine
  # the load changes during a run, and the harness takes the best ceiling it saw.
  from benchmarks import ceilings
  n, reps = (512, 2) if spec.get("quick") else (4096, 3)
  out["matmul_gflops_after"] = round(ceilings.jax_matmul_gflops(n, reps), 1)
  dev = jax.devices()[0]
  if dev.platform == "gpu":
    out["device_peak_mb"] = round((dev.memory_stats() or {}).get("peak_bytes_in_use", 0) / 2 ** 20, 1)
  return out


def _memory(compiled: Any) -> dict[str, float] | None:
  """XLA's buffer accounting in MB: arguments, outputs, temporaries and their sum."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # some backends do not implement it
    return None
  if m is None:
    return None
  mb = lambda b: round(b / 2 ** 20, 1)
  total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
           - m.alias_size_in_bytes)
  return {"argument_mb": mb(m.argument_size_in_bytes), "output_mb": mb(m.output_size_in_bytes),
          "temp_mb": mb(m.temp_size_in_bytes), "total_mb": mb(total)}


def torch_worker(spec: dict[str, Any]) -> dict[str, Any]:
  """The same measurement for :mod:`benchmarks.torch_hpnet` (eager or ``torch.compile``)."""
  import torch

  from benchmarks import torch_hpnet

  shape = Shape(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["shape"].items()})
  timing = spec["timing"]
  compile_ = spec["mode"] == "compile"
  torch.set_num_threads(spec["threads"])
  device = torch.device("cuda" if spec.get("gpu") and torch.cuda.is_available() else "cpu")
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  torch.manual_seed(0)
  if spec["model"].startswith("hpnet"):
    dtype = MODEL_MATMUL_DTYPE[spec["model"]]
    model = torch_hpnet.TorchHPNet(shape.channels, shape.num_attributes, shape.features,
                                   shape.dilations, dtype and getattr(torch, dtype)).to(device)
  else:
    model = torch_hpnet.TorchBaselineNet(shape.channels, shape.num_attributes, shape.features,
                                         shape.dilations).to(device)
  images, labels = _batch(shape)
  x = torch.from_numpy(images).to(device).float() / 255.0
  y = torch.from_numpy(labels).to(device)
  out: dict[str, Any] = {"framework": "torch", "mode": "compile" if compile_ else "eager",
                         "model": spec["model"], "shape": shape.name,
                         "threads": torch.get_num_threads(), "device": str(device)}

  model.eval()
  infer_model = torch.compile(model) if compile_ else model

  def infer():
    with torch.inference_mode():
      infer_model(x)
    sync()

  t = time.perf_counter()
  infer()
  first = time.perf_counter() - t
  times = _time_calls(infer, **timing["inference"])
  out["inference"] = {**_rate(times, shape.batch), "first_call_s": round(first, 3)}
  out["peak_rss_mb_after_inference"] = _peak_rss_mb()

  model.train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  step = torch_hpnet.make_train_step(model, opt, compile=compile_)
  holder: dict[str, float] = {}

  def one():
    holder["loss"] = float(step(x, y))
    sync()

  first, first_loss, times = _train_timing(one, holder, timing["train"])
  out["train"] = {**_rate(times, shape.batch), "first_step_s": round(first, 3),
                  "loss_first": first_loss, "loss_last": holder["loss"]}
  out["peak_rss_mb"] = _peak_rss_mb()
  if device.type == "cuda":
    out["device_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
  return out


def _in_process(spec: dict[str, Any]) -> dict[str, Any]:
  """Runs one worker here (quick mode); an exception becomes ``{"error"}``."""
  try:
    return (jax_worker if spec["framework"] == "jax" else torch_worker)(spec)
  except Exception as e:  # a failed measurement is a result, not a crash of the suite
    return {"error": f"{type(e).__name__}: {e}", "spec": spec}


def _spawn(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
  """Runs one worker in a fresh interpreter; returns its JSON result or ``{"error"}``."""
  cmd = [sys.executable, "-m", "benchmarks.hpnet", "--worker", json.dumps(spec)]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f} s", "spec": spec}
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode != 0 or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"worker exited with {proc.returncode}: " + " | ".join(tail), "spec": spec}
  return json.loads(lines[-1])


# ---------------------------------------------------------------------------
# The suites.

def _timing(quick: bool) -> dict[str, dict[str, Any]]:
  if quick:
    return {"train": {"warmup": 0, "min_steps": 2, "max_steps": 2, "min_time": 0.0},
            "inference": {"warmup": 0, "min_steps": 2, "max_steps": 2, "min_time": 0.0}}
  return {"train": {"warmup": 1, "min_steps": 3, "max_steps": 10, "min_time": 20.0},
          "inference": {"warmup": 1, "min_steps": 5, "max_steps": 30, "min_time": 5.0}}


def run(quick: bool = False, *, threads: int | None = None, torch_compile: bool | None = None,
        gpu: bool = False, sizes: Sequence[int] | None = None) -> dict[str, Any]:
  """JAX vs PyTorch on every shape; returns per-run records and a ratio table.

  Args:
    quick: one tiny shape, two timed steps (a smoke run; its numbers mean nothing).
    threads: PyTorch threads (default: the cores this process may run on, which is
      what XLA's CPU client uses).
    torch_compile: also run ``torch.compile`` (default: not in quick mode, where its
      compilation alone would take most of a minute).
    gpu: run PyTorch on CUDA (when the JAX device is a GPU).
    sizes: image sizes to run (default: every shape's).
  """
  threads = threads or len(os.sched_getaffinity(0))
  torch_compile = (not quick) if torch_compile is None else torch_compile
  have_torch = importlib.util.find_spec("torch") is not None
  shapes = QUICK_SHAPES if quick else FULL_SHAPES
  if sizes:
    shapes = tuple(s for s in shapes if s.size in sizes)
    if not shapes:
      raise ValueError(f"sizes {list(sizes)}: no benchmark shape has them (sizes "
                       f"{[s.size for s in (QUICK_SHAPES if quick else FULL_SHAPES)]})")
  timing = _timing(quick)
  timeout = 300 if quick else 1800
  runs: list[dict[str, Any]] = []
  torch_modes = (["eager", "compile"] if torch_compile else ["eager"]) if have_torch else []
  # The baseline (extractor only) at the largest shape separates the extractor's share;
  # the bfloat16-GEMM variant runs there too.
  jobs = [("hpnet", s) for s in shapes] + (
      [] if quick else [("hpnet_bf16", shapes[-1]), ("baseline", shapes[-1]),
                        *((m, shapes[-1]) for m in JAX_ONLY)])
  # A quick run works in this process: a fresh interpreter per worker costs seconds of
  # imports each, which is what --quick cannot afford; its RSS is then not isolated.
  launch = _in_process if quick else functools.partial(_spawn, timeout=timeout)
  for model, shape in jobs:
    base = {"model": model, "shape": dataclasses.asdict(shape), "timing": timing,
            "threads": threads, "gpu": gpu, "quick": quick}
    runs.append(launch({**base, "framework": "jax", "mode": "jit"}))
    for mode in (() if model in JAX_ONLY else torch_modes):
      runs.append(launch({**base, "framework": "torch", "mode": mode}))
  table = _ratios(runs, shapes)
  return {
      "config": {"quick": quick, "shapes": [dataclasses.asdict(s) | {"name": s.name} for s in shapes],
                 "baseline_shape": None if quick else shapes[-1].name, "torch_threads": threads,
                 "torch_modes": torch_modes or "torch not installed",
                 "timing": timing,
                 "isolation": ("in-process (quick: RSS not isolated)" if quick else
                               "one fresh process per framework and shape"),
                 "peak_memory": "peak RSS (VmHWM) of that process, read after inference "
                                "and after training; JAX also reports XLA memory_analysis()",
                 "flops": "analytic: extractor 3x3 convs + K*H*W*C^2 mask convs, x3 for training",
                 "jax_step": "hpjax.core.training.train_step + hpjax.hpnet.experiment.make_loss_fn + "
                             "make_optimizer, jit without donation (as training.fit)"},
      "flops_per_image": {s.name: {"hpnet_forward": forward_flops(s),
                                   "baseline_forward": forward_flops(s, "baseline")}
                          for s in shapes},
      "runs": runs,
      "summary": table,
  }


def _ratios(runs: list[dict[str, Any]], shapes: Sequence[Shape]) -> dict[str, Any]:
  """Per model and shape: images/s of each framework and JAX's ratio to each."""
  flops = {s.name: s for s in shapes}
  out: dict[str, Any] = {}
  for r in runs:
    if "error" in r:
      continue
    key = f"{r['model']}/{r['shape']}"
    row = out.setdefault(key, {})
    tag = "jax" if r["framework"] == "jax" else f"torch_{r['mode']}"
    for phase in ("train", "inference"):
      row[f"{phase}_images_per_s/{tag}"] = r[phase]["images_per_s"]
      row[f"{phase}_images_per_cpu_s/{tag}"] = r[phase]["images_per_cpu_s"]
    row[f"peak_rss_mb/{tag}"] = r["peak_rss_mb"]
    row[f"first_step_s/{tag}"] = r["train"]["first_step_s"]
    if tag == "jax":
      s = flops[r["shape"]]
      f = forward_flops(s, r["model"])
      row["jax_train_gflops"] = round(3 * f * r["train"]["images_per_s"] / 1e9, 1)
      row["jax_inference_gflops"] = round(f * r["inference"]["images_per_s"] / 1e9, 1)
  for key, row in out.items():
    model, shape = key.split("/", 1)
    before = out.get(f"{model}{XLA_DW}/{shape}", {}).get("train_images_per_s/jax")
    if before and row.get("train_images_per_s/jax"):
      # The GEMM weight gradients' speed-up, both variants timed in this run.
      row["train_speedup_over_xla_weight_grad"] = round(row["train_images_per_s/jax"] / before, 2)
    for phase in ("train", "inference"):
      for unit, suffix in (("s", ""), ("cpu_s", "_per_cpu_s")):
        j = row.get(f"{phase}_images_per_{unit}/jax")
        for tag in ("torch_eager", "torch_compile"):
          t = row.get(f"{phase}_images_per_{unit}/{tag}")
          if j and t:
            row[f"{phase}_ratio_jax_over_{tag}{suffix}"] = round(j / t, 2)
  return out


def run_pruning(quick: bool = False) -> dict[str, Any]:
  """Inference time of physically pruned HPNets against their FLOP reduction.

  The full model's variables are pruned with :func:`hpjax.hpnet.model.prune_params`
  (keeping the first C' channels; which ones does not change the cost) and run with
  :func:`hpjax.hpnet.model.pruned_model`. Variants are timed interleaved (one call of
  each in turn, best of the rounds), so a change in machine load hits them alike.
  ``efficiency = speed-up / FLOP reduction`` (1 = the time falls as the FLOPs do).
  """
  import jax
  import jax.numpy as jnp

  from hpjax.hpnet import model as model_lib
  from hpjax.core import training
  from hpjax.hpnet.model import HPNet

  shape = QUICK_SHAPES[0] if quick else Shape(64, 3, 40)
  c = shape.features[-1]
  kept_counts = [c, c // 2] if quick else [c, 3 * c // 4, c // 2, c // 4]
  rounds = 2 if quick else 7
  model = HPNet(shape.num_attributes, shape.features, shape.dilations)
  images, _ = _batch(shape)
  x = jnp.asarray(images)
  variables = model.init(jax.random.key(0), training.images_to_float(x[:1]))
  fns = {}
  for kept in kept_counts:
    v = model_lib.prune_params(variables, np.arange(kept)) if kept < c else variables
    small = model_lib.pruned_model(model, kept)
    f = jax.jit(lambda v, x, m=small: m.apply(v, training.images_to_float(x), train=False)[0])
    f(v, x).block_until_ready()
    fns[kept] = (f, v)
  best = {k: float("inf") for k in fns}
  best_cpu = {k: float("inf") for k in fns}
  for _ in range(rounds):
    for k, (f, v) in fns.items():
      t, t_cpu = time.perf_counter(), time.process_time()
      f(v, x).block_until_ready()
      best[k] = min(best[k], time.perf_counter() - t)
      best_cpu[k] = min(best_cpu[k], time.process_time() - t_cpu)
  full_flops = forward_flops(shape)
  rows = []
  for k in kept_counts:
    fl = forward_flops(shape, features=shape.features[:-1] + (k,))
    speedup = best[c] / best[k]
    reduction = full_flops / fl
    speedup_cpu = best_cpu[c] / best_cpu[k]
    rows.append({"kept_channels": k, "forward_gflops_per_image": round(fl / 1e9, 4),
                 "flop_reduction": round(reduction, 3), "inference_s_best": round(best[k], 5),
                 "inference_cpu_s_best": round(best_cpu[k], 5),
                 "speedup": round(speedup, 3), "efficiency": round(speedup / reduction, 3),
                 "efficiency_cpu": round(speedup_cpu / reduction, 3)})
  return {"config": {"quick": quick, "shape": shape.name, "batch": shape.batch,
                     "features": shape.features, "rounds": rounds,
                     "pruning": "hpjax.hpnet.model.prune_params + pruned_model",
                     "timing": "interleaved rounds, best wall (and best CPU) time per variant"},
          "rows": rows}


# ---------------------------------------------------------------------------
# Op-level profile (evidence for benchmarks/NOTES.md).

def profile_train_step(shape: Shape, model_name: str = "hpnet", top: int = 30,
                       reps: int = 2) -> list[dict[str, Any]]:
  """Per-HLO-op time of the jitted train step, from the CPU runtime's profiler trace.

  Returns the ``top`` ops by total duration per step, each with its output shape and
  the JAX op it came from (HLO metadata), e.g. to see how much of a step the heads'
  GEMMs take against their elementwise work.
  """
  import collections
  import glob
  import gzip
  import re
  import shutil
  import tempfile

  import jax
  import jax.numpy as jnp

  from hpjax.core import training
  from hpjax.hpnet.experiment import make_loss_fn
  from hpjax.hpnet.config import AttributesConfig

  model = _jax_model(model_name, shape)
  image_shape = (shape.size, shape.size, shape.channels)
  config = AttributesConfig(features=shape.features, dilations=shape.dilations, l1_reduction="sum")
  state = training.create_train_state(model, training.make_optimizer(1e-3, 1, 10), image_shape, 0)
  images, labels = _batch(shape)
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
  step = jax.jit(functools.partial(training.train_step,
                                   loss_fn=make_loss_fn(config, image_shape, shape.num_attributes)))
  compiled = step.lower(state, batch).compile()
  jax.block_until_ready(compiled(state, batch))
  d = tempfile.mkdtemp()
  try:
    jax.profiler.start_trace(d, create_perfetto_trace=True)
    for _ in range(reps):
      jax.block_until_ready(compiled(state, batch))
    jax.profiler.stop_trace()
    trace = json.load(gzip.open(glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)[0]))
  finally:
    shutil.rmtree(d, ignore_errors=True)
  meta = {}
  for line in compiled.as_text().splitlines():
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) .*?op_name=\"([^\"]+)\"", line)
    if m:
      meta[m.group(1)] = (m.group(2), m.group(3))
  durations: dict[str, list[float]] = collections.defaultdict(list)
  for e in trace["traceEvents"]:
    if e.get("ph") == "X" and e["name"] in meta:
      durations[e["name"]].append(e["dur"])
  # Median per call × calls per step: one preempted call on a shared machine moves a
  # median much less than a sum.
  per_step = {n: statistics.median(d) * len(d) / reps for n, d in durations.items()}
  rows = []
  for name, us in sorted(per_step.items(), key=lambda kv: -kv[1])[:top]:
    out_shape, op = meta[name]
    rows.append({"op": name, "ms_per_step": round(us / 1e3, 2),
                 "calls_per_step": len(durations[name]) // reps, "output": out_shape,
                 "jax_op": op.split("jit(train_step)/")[-1]})
  return rows


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny shapes, two steps (smoke run)")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  p.add_argument("--profile", action="store_true",
                 help="print the train step's top XLA ops at 64x64/K=40 (batch 8)")
  p.add_argument("--model", default="hpnet",
                 choices=[*MODEL_MATMUL_DTYPE, "baseline", *JAX_ONLY],
                 help="model for --profile")
  args = p.parse_args(argv)
  if args.worker:
    spec = json.loads(args.worker)
    result = (jax_worker if spec["framework"] == "jax" else torch_worker)(spec)
    print(json.dumps(result), flush=True)
    return 0
  if args.profile:
    shape = QUICK_SHAPES[0] if args.quick else Shape(64, 3, 40, batch=8)
    rows = profile_train_step(shape, args.model)
    print(f"total of the top ops: {sum(r['ms_per_step'] for r in rows):.0f} ms per step")
    for row in rows:
      print(f"{row['ms_per_step']:9.2f} ms  x{row['calls_per_step']:<4d} {row['output'][:30]:30s} "
            f"{row['jax_op'][-70:]}")
    return 0
  print(json.dumps({"hpnet": run(args.quick), "pruning": run_pruning(args.quick)}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
