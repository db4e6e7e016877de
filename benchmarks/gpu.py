"""The GPU check: what a large accelerator makes of HPNet and the image score, in one run.

``python -m benchmarks.gpu [--quick] [--out DIR] [--budget-s S] [--batches 64,128,...]
[--variants streamed,...] [--in-process]`` (issue 11, item 5). Sized to finish within
8 minutes on one H100/H200-class GPU; ``--quick`` runs the same code on tiny shapes on a
CPU in seconds (CI). Writes ``benchmarks/results/<machine>.gpu_check.json`` and ``.md``
(``<machine>.gpu_check.quick.*`` for ``--quick``), atomically, ``<machine>`` named by the
device as in :mod:`benchmarks.harness`. It is a script of its own, not a suite of the
harness: the harness runs its suites in one process, and this check needs a fresh
process per HPNet variant (below).

What one run measures:

* **Ceilings** (:mod:`benchmarks.ceilings`): the jitted ``n × n`` matmul rate on
  bfloat16 operands, on float32 at the default precision (TF32 tensor cores on an
  NVIDIA GPU) and at ``HIGHEST`` (true float32), and the donated ``x + 1`` copy
  bandwidth (bytes *read* per second: bytes moved are twice that).
* **HPNet train step** at 128×128×3, K = 40, features (32, 64, 64, 128), batch sizes
  64–512, for each variant of the heads: streamed (``HPNet(stream_heads=True)``) or
  materialised (``False``), float32 or bfloat16 head GEMMs (``head_matmul_dtype``).
  Per batch size: images/s (median step), useful TFLOP/s (3 × the analytic forward
  FLOPs of :func:`benchmarks.hpnet.forward_flops`, so the streamed backward's
  recomputed GEMM counts as overhead) and their fraction of the bfloat16 and the
  default-precision matmul ceilings, the first step's time (``lower().compile()`` +
  the first execution; ``compile_s`` alone beside it), the device's
  ``memory_stats()["peak_bytes_in_use"]`` (None on a CPU) and XLA's own buffer
  accounting, the loss of the first and last step, and the while loops' trip counts
  read from the compiled HLO. Out of memory at a batch size is recorded as ``"oom"``
  and the variant's larger batches as skipped; the other variants go on.
* **Kernels per step**, at each variant's first (smallest) batch size, from a
  :mod:`jax.profiler` trace of ``profile_steps`` steps: on a GPU the kernels CUPTI saw
  run on the device's streams (launched one by one or inside CUDA graphs; memcpy and
  memset counted apart), the HLO ops of the ``XLA Ops`` line when the trace has one,
  and the host's kernel and graph launch calls (``cuLaunchKernel*``, ``cuGraphLaunch``);
  on a CPU the thunks XLA:CPU executed (trace events named after an HLO instruction of
  the step, while/conditional themselves left out, their bodies counted per
  iteration). See :func:`trace_counts`.
* **Image score** (paper B): :func:`hpjax.image_score.make_fused_scorer` on ResNet18
  (CIFAR form, 32×32×3, every block a tap) against its plain jitted forward, and the
  score alone (:func:`hpjax.image_score.score_taps` jitted on taps already on the
  device); images/s of each, and the bytes of activations the score reads per second
  as a fraction of the copy bandwidth.

Isolation and budget: each HPNet variant runs in a fresh process (``--in-process``:
all here, the default for ``--quick``), its batch sizes ascending, so the process's
peak memory read after a batch size is that batch size's (memory grows with the
batch) and an out-of-memory never poisons the next variant; the parent process never
touches the device. Ceilings and image score run first, in one process; then the
variants, materialised first (they run out of memory early and hand their time on),
each given an equal share of the time left of ``--budget-s``. A variant skips a batch
size it cannot finish in its share (estimated as 1.5 × the previous one's time) and is
stopped ``GRACE_S`` after its share; what it measured by then is kept.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from benchmarks import harness
from benchmarks import hpnet as hpnet_bench
from benchmarks.hpnet import PAPER_FEATURES, Shape, forward_flops
from benchmarks.timing import best_seconds
from hpjax.core import cli
from hpjax.core.errors import ConfigError
from hpjax.core.io import to_json, write_json, write_text

# HPNet variants: name → (stream_heads, head_matmul_dtype). Materialised first: see the
# module docstring ("Isolation and budget").
VARIANTS = {
    "materialised": (False, None),
    "materialised_bf16": (False, "bfloat16"),
    "streamed": (True, None),
    "streamed_bf16": (True, "bfloat16"),
}
# Seconds a worker may run past its share of the budget before it is stopped.
GRACE_S = 20.0
# Marks a worker's result lines on its stdout (XLA may print there too).
MESSAGE_PREFIX = "@gpu-check "


@dataclasses.dataclass(frozen=True)
class Plan:
  """Sizes, repeats and time budget of one run."""
  shape: Shape                  # HPNet; its batch is replaced by each of ``batches``
  batches: tuple[int, ...]
  matmul_n: int                 # the ceilings' square matmul
  copy_bytes: int               # the copy ceiling's array
  ceiling_repeats: int
  min_steps: int                # timed train steps: at least min_steps and min_time s,
  max_steps: int                # at most max_steps
  min_time: float
  profile_steps: int            # traced steps for the kernel count
  score_model: str              # "resnet18" or "smallcnn" (_score_model)
  score_batch: int
  score_batches: int
  score_repeats: int
  budget_s: float               # the whole run's measuring time


FULL = Plan(shape=Shape(128, 3, 40, batch=64, features=PAPER_FEATURES),
            batches=(64, 128, 256, 512), matmul_n=8192, copy_bytes=2 ** 31,
            ceiling_repeats=10, min_steps=2, max_steps=8, min_time=2.0, profile_steps=1,
            score_model="resnet18", score_batch=1024, score_batches=8, score_repeats=5,
            budget_s=420.0)
QUICK = Plan(shape=Shape(16, 3, 4, batch=2, features=(4, 8, 8, 8)), batches=(2, 4),
             matmul_n=256, copy_bytes=2 ** 22, ceiling_repeats=2, min_steps=2, max_steps=2,
             min_time=0.0, profile_steps=2, score_model="smallcnn", score_batch=32,
             score_batches=2, score_repeats=2, budget_s=120.0)


def _score_model(name: str) -> tuple[Any, tuple[int, int, int]]:
  """A tapped image-score model and its image shape."""
  from hpjax.image_score.models import ResNet18, SmallCNN

  return {"resnet18": (ResNet18(), (32, 32, 3)),
          "smallcnn": (SmallCNN(width=0.25), (16, 16, 1))}[name]


def _log(text: str) -> None:
  print(f"[gpu-check {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _sig(x: float | None, digits: int = 4) -> float | None:
  """``x`` rounded to ``digits`` significant digits (None and non-finite: None)."""
  if x is None or not math.isfinite(x):
    return None
  return float(f"{x:.{digits}g}")


# ---------------------------------------------------------------------------
# Kernel counts from a profile.

_COPY = re.compile(r"(?i)mem(cpy|set)")
_LAUNCH = re.compile(r"cu(da)?(Launch\w*Kernel|GraphLaunch)")
_CONTROL = frozenset({"while", "conditional", "call"})


def hlo_opcodes(hlo_text: str) -> dict[str, str]:
  """Instruction name → opcode of every instruction in a compiled module's text."""
  ops = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%(\S+) = .*? ([a-z][a-z0-9-]*)\(", hlo_text, re.M):
    ops[m.group(1)] = m.group(2)
  return ops


def trace_counts(planes: Iterable[tuple[str, str, Sequence[str]]], ops: Mapping[str, str],
                 steps: int, accelerator: bool) -> dict[str, Any]:
  """Kernels, copies, HLO ops and launch calls per step in a profile.

  Args:
    planes: ``(plane name, line name, event names)`` of every line of the trace.
    ops: :func:`hlo_opcodes` of the profiled program.
    steps: how many steps the trace covers.
    accelerator: the program ran on a GPU/TPU (so a trace without device streams lacks
      the device's activity, rather than being a CPU's).

  Device planes (``/device:GPU:0``, …, not ``/device:CPU``) hold CUPTI's activity:
  their ``Stream #…`` lines are what ran on the device, kernels and memcpy/memset; an
  ``XLA Ops`` line (when the trace has one) the HLO ops those kernels belong to. Host
  planes (``/host:…``) hold the launch calls CUPTI traced (``cuLaunchKernel*``,
  ``cuGraphLaunch``) and, on a CPU, the XLA:CPU runtime's thunks, one event per HLO
  instruction executed (named after it). With no stream line at all (a CPU, or a GPU
  whose trace lacks CUPTI's activity) the kernels are those thunks, while and
  conditional instructions left out (their bodies' thunks count once per iteration);
  on an accelerator the count is then unknown (None).
  """
  kernels = copies = device_ops = host_ops = launches = 0
  streams = False
  for plane, line, names in planes:
    if plane.startswith("/device:") and not plane.startswith("/device:CPU"):
      if line.startswith("Stream #"):
        streams = True
        c = sum(1 for n in names if _COPY.search(n))
        copies += c
        kernels += len(names) - c
      elif line == "XLA Ops":
        device_ops += len(names)
    elif plane.startswith("/host:"):
      launches += sum(1 for n in names if _LAUNCH.match(n))
      host_ops += sum(1 for n in names if n in ops and ops[n] not in _CONTROL)
  per = lambda n: _sig(n / steps) if n else None
  if streams:
    return {"kernels_per_step": _sig(kernels / steps), "copies_per_step": _sig(copies / steps),
            "hlo_ops_per_step": per(device_ops), "host_launches_per_step": per(launches),
            "counted_as": "device kernels on the GPU streams (CUPTI activity)", "steps": steps}
  if accelerator:
    return {"kernels_per_step": None, "copies_per_step": None, "hlo_ops_per_step": None,
            "host_launches_per_step": per(launches), "steps": steps,
            "counted_as": "nothing: the trace has no device stream (CUPTI unavailable?)"}
  return {"kernels_per_step": _sig(host_ops / steps), "copies_per_step": None,
          "hlo_ops_per_step": _sig(host_ops / steps), "host_launches_per_step": per(launches),
          "counted_as": "XLA:CPU thunks (HLO instructions executed; no device streams in "
                        "the trace)", "steps": steps}


def profile_counts(run_steps: Callable[[], None], hlo_text: str, steps: int) -> dict[str, Any]:
  """:func:`trace_counts` of a :mod:`jax.profiler` trace of ``run_steps`` (``steps`` steps)."""
  import jax
  from jax.profiler import ProfileData

  d = tempfile.mkdtemp(prefix="gpu-check-trace-")
  try:
    with jax.profiler.trace(d):
      run_steps()
    paths = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
    if not paths:
      return {"error": "the profiler wrote no .xplane.pb"}
    data = ProfileData.from_file(paths[0])
    planes = [(p.name, line.name, [e.name for e in line.events])
              for p in data.planes for line in p.lines]
  finally:
    shutil.rmtree(d, ignore_errors=True)
  return trace_counts(planes, hlo_opcodes(hlo_text), steps,
                      accelerator=jax.devices()[0].platform != "cpu")


# ---------------------------------------------------------------------------
# Workers: each reports through ``emit(kind, data)``.

Emit = Callable[[str, Any], None]


def _peak_mb() -> float | None:
  """The device's ``peak_bytes_in_use`` in MiB (this process's peak); None without stats."""
  import jax

  stats = jax.devices()[0].memory_stats()
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return round(stats["peak_bytes_in_use"] / 2 ** 20, 1)


def _failure(e: BaseException) -> tuple[str, str]:
  """``("oom" | "error", one-line message)`` of a failed measurement."""
  text = f"{type(e).__name__}: {e}"
  first = text.strip().splitlines()[0][:300]
  oom = "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()
  return ("oom" if oom else "error"), first


def ceilings_and_score(plan: Plan, emit: Emit) -> None:
  """Machine, ceilings and image score; refuses the full plan on a CPU."""
  import jax
  import jax.numpy as jnp

  from benchmarks import ceilings

  machine = harness.machine_info()
  emit("machine", machine)
  if plan is FULL and machine["platform"] == "cpu":
    emit("refused", "JAX's default device is a CPU; the full check is sized for a large "
                    "GPU (run it with --quick on a CPU)")
    return
  _log(f"device {machine['device_kind']} ({machine['platform']}); ceilings ...")
  n, reps = plan.matmul_n, plan.ceiling_repeats
  with jax.default_matmul_precision("highest"):
    highest = ceilings.jax_matmul_gflops(n, reps)
  matmul = {"bfloat16": ceilings.jax_matmul_gflops(n, reps, jnp.bfloat16),
            "float32_default": ceilings.jax_matmul_gflops(n, reps),
            "float32_highest": highest}
  copy = ceilings.jax_copy_gbps(plan.copy_bytes, reps)
  out = {"config": {"matmul_n": n, "copy_bytes": plan.copy_bytes, "repeats": reps,
                    "timing": "best of repeats after one warm-up call",
                    "copy_convention": "bytes read per second (bytes moved = 2x)"},
         "matmul_tflops": {k: _sig(v / 1e3) for k, v in matmul.items()},
         "copy_gbps": _sig(copy), "peak_mb": _peak_mb()}
  emit("ceilings", out)
  _log("ceilings: " + ", ".join(f"{k} {v} TFLOP/s" for k, v in out["matmul_tflops"].items())
       + f"; copy {out['copy_gbps']} GB/s")
  try:
    emit("image_score", image_score(plan, copy))
  except Exception as e:  # recorded; the HPNet variants still run
    emit("image_score", {"status": "error", "error": _failure(e)[1]})


def image_score(plan: Plan, copy_gbps: float) -> dict[str, Any]:
  """Images/s of the fused scorer, the plain forward and the score alone; see the docstring."""
  import jax

  from hpjax import image_score as isc

  model, image_shape = _score_model(plan.score_model)
  _log(f"image score: {plan.score_model} {image_shape}, {plan.score_batches} batches of "
       f"{plan.score_batch} ...")
  apply = functools.partial(model.apply, train=False)
  variables = jax.jit(model.init)(jax.random.key(0), jax.numpy.zeros((1, *image_shape)))
  batches = list(jax.random.uniform(jax.random.key(1),
                                    (plan.score_batches, plan.score_batch, *image_shape)))
  forward = jax.jit(apply)
  logits, aux = forward(variables, batches[0])
  reference = isc.fit_reference(aux["taps"], np.arange(plan.score_batch) % 10, 10)
  plain = jax.jit(lambda v, x: apply(v, x)[0])
  fused = isc.make_fused_scorer(apply, reference)
  outputs = [forward(variables, x) for x in batches]  # taps kept on the device
  score = jax.jit(isc.score_taps)
  tap_bytes = sum(int(np.prod(aux["taps"][n].shape[1:])) * aux["taps"][n].dtype.itemsize
                  for n in reference.names)
  del logits, aux

  def over_batches(fn: Callable[[int], Any]) -> float:
    return best_seconds(lambda: jax.block_until_ready([fn(i) for i in range(len(batches))]),
                        plan.score_repeats)

  seconds = {"plain_forward": over_batches(lambda i: plain(variables, batches[i])),
             "fused": over_batches(lambda i: fused(variables, batches[i])),
             "score_only": over_batches(lambda i: score(reference, outputs[i][1]["taps"],
                                                        outputs[i][0]))}
  images = plan.score_batch * plan.score_batches
  rate = {k: images / s for k, s in seconds.items()}
  out = {"config": {"model": plan.score_model, "image_shape": list(image_shape),
                    "batch": plan.score_batch, "batches": plan.score_batches,
                    "repeats": plan.score_repeats, "taps": list(reference.names),
                    "fused": "make_fused_scorer (two programs, the default)"},
         "tap_bytes_per_image": tap_bytes,
         "images_per_s": {k: _sig(v) for k, v in rate.items()},
         "fused_over_plain_time": _sig(seconds["fused"] / seconds["plain_forward"]),
         # Bytes of activations the score reads per second, over the copy ceiling: for
         # the score alone (its own memory efficiency) and for the fused pass (the
         # forward's cost included).
         "score_only_tap_gbps": _sig(tap_bytes * rate["score_only"] / 1e9),
         "score_only_fraction_of_copy": _sig(tap_bytes * rate["score_only"] / 1e9 / copy_gbps),
         "fused_tap_gbps": _sig(tap_bytes * rate["fused"] / 1e9),
         "fused_fraction_of_copy": _sig(tap_bytes * rate["fused"] / 1e9 / copy_gbps),
         "status": "ok"}
  _log(f"image score: fused {out['images_per_s']['fused']} img/s, plain "
       f"{out['images_per_s']['plain_forward']}, score alone at "
       f"{out['score_only_fraction_of_copy']} of copy bandwidth")
  return out


def sweep(plan: Plan, variant: str, batches: Sequence[int], deadline: float, emit: Emit) -> None:
  """One HPNet variant over ``batches`` (ascending), one ``"hpnet"`` row per batch size."""
  skip = None
  estimate = 0.0
  for i, batch in enumerate(batches):
    if skip is None and time.time() + estimate > deadline:
      skip = "time budget"
    if skip is not None:
      emit("hpnet", {"variant": variant, "batch": batch, "status": "skipped", "reason": skip})
      _log(f"{variant} batch {batch}: skipped ({skip})")
      continue
    _log(f"{variant} batch {batch} ...")
    t = time.perf_counter()
    row = train_config(plan, variant, batch, profile=i == 0)
    emit("hpnet", row)
    _log(f"{variant} batch {batch}: " + (
        f"{row['images_per_s']} img/s, first step {row['first_step_s']} s, peak "
        f"{row['peak_mb']} MB" if row["status"] == "ok" else f"{row['status']}: {row['error']}"))
    if row["status"] == "oom":
      skip = f"out of memory at batch {batch}"
    estimate = next_estimate(row, time.perf_counter() - t)
    gc.collect()


def next_estimate(row: Mapping[str, Any], wall: float) -> float:
  """Seconds the next (twice as large) batch size is expected to take after ``row``.

  Compilation costs about the same at every batch size and the steps twice as long;
  a failed measurement gives no split, so its whole wall time, 1.5 ×, stands in.
  """
  if row.get("status") != "ok":
    return 1.5 * wall
  steps_s = row["first_step_s"] - row["compile_s"] + row["steps"] * row["step_s_median"]
  return 1.2 * row["compile_s"] + 2.2 * steps_s


@functools.lru_cache(maxsize=1)
def _shared_initial_state(plan: Plan) -> Any:
  """HPNet's initial train state at ``plan``'s shape, built once per process (the variants
  share its parameter tree: streaming and the GEMM dtype change no parameter)."""
  from hpjax.core import training
  from hpjax.hpnet.config import AttributesConfig
  from hpjax.hpnet.model import HPNet

  s = plan.shape
  config = AttributesConfig()
  tx = training.make_optimizer(config.learning_rate, config.warmup_steps, config.num_steps)
  return training.create_train_state(HPNet(s.num_attributes, s.features, s.dilations), tx,
                                     (s.size, s.size, s.channels), seed=0)


def initial_state(plan: Plan, variant: str) -> Any:
  """The variant's initial train state (Adam, AttributesConfig's default schedule)."""
  from hpjax.hpnet.model import HPNet

  stream, dtype = VARIANTS[variant]
  s = plan.shape
  model = HPNet(s.num_attributes, s.features, s.dilations, stream_heads=stream,
                head_matmul_dtype=dtype)
  return _shared_initial_state(plan).replace(apply_fn=model.apply)


def train_config(plan: Plan, variant: str, batch: int, profile: bool) -> dict[str, Any]:
  """One train-step measurement (see the module docstring); failures become the row's status."""
  import jax
  import jax.numpy as jnp

  from hpjax.core import training
  from hpjax.hpnet.config import AttributesConfig
  from hpjax.hpnet.experiment import make_loss_fn

  stream, dtype = VARIANTS[variant]
  shape = dataclasses.replace(plan.shape, batch=batch)
  row: dict[str, Any] = {"variant": variant, "batch": batch, "stream_heads": stream,
                         "head_matmul_dtype": dtype,
                         "forward_gflops_per_image": _sig(forward_flops(shape) / 1e9)}
  try:
    image_shape = (shape.size, shape.size, shape.channels)
    config = AttributesConfig(features=shape.features, dilations=shape.dilations,
                              batch_size=batch, image_size=shape.size, l1_reduction="sum")
    state = initial_state(plan, variant)
    images, labels = hpnet_bench._batch(shape)
    data = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
    step = jax.jit(functools.partial(
        training.train_step, loss_fn=make_loss_fn(config, image_shape, shape.num_attributes)))
    t = time.perf_counter()
    compiled = step.lower(state, data).compile()
    compile_s = time.perf_counter() - t
    holder = {"state": state}
    del state

    def one() -> None:
      holder["state"], metrics = compiled(holder["state"], data)
      jax.block_until_ready((holder["state"], metrics))
      holder["loss"] = float(metrics["loss"])

    timing = {"warmup": 0, "min_steps": plan.min_steps, "max_steps": plan.max_steps,
              "min_time": plan.min_time}
    first_exec, first_loss, times = hpnet_bench._train_timing(one, holder, timing)
    rate = hpnet_bench._rate(times, batch)
    text = compiled.as_text()
    row.update({"status": "ok", "images_per_s": _sig(rate["images_per_s"]),
                "images_per_s_best": _sig(rate["images_per_s_best"]),
                "step_s_median": rate["step_s_median"], "steps": rate["steps"],
                "compile_s": round(compile_s, 3), "first_step_s": round(compile_s + first_exec, 3),
                "loss_first": first_loss, "loss_last": holder["loss"], "peak_mb": _peak_mb(),
                "xla_memory": hpnet_bench._memory(compiled),
                "while_trip_counts": sorted(
                    (int(n) for n in re.findall(r'"known_trip_count":\{"n":"(\d+)"\}', text)),
                    reverse=True)[:8]})
    if profile:
      try:
        row["profile"] = profile_counts(
            lambda: [one() for _ in range(plan.profile_steps)], text, plan.profile_steps)
      except Exception as e:  # the throughput stands without the count
        row["profile"] = {"error": _failure(e)[1]}
  except Exception as e:  # out of memory (or another failure) is this batch size's result
    row["status"], row["error"] = _failure(e)
    row["peak_mb"] = _peak_mb()
  return row


def worker(spec: Mapping[str, Any], emit: Emit) -> None:
  """Runs one job: ``{"job": "machine" | "hpnet", "quick", ...}``."""
  plan = QUICK if spec["quick"] else FULL
  if spec["job"] == "machine":
    ceilings_and_score(plan, emit)
  else:
    sweep(plan, spec["variant"], spec["batches"], spec["deadline"], emit)


# ---------------------------------------------------------------------------
# Launching workers and collecting what they report.

def run_in_process(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
  """Runs a worker here; returns its messages."""
  messages: list[tuple[str, Any]] = []
  worker(spec, lambda kind, data: messages.append((kind, data)))
  return messages


def run_isolated(spec: Mapping[str, Any], timeout: float) -> list[tuple[str, Any]]:
  """Runs a worker in a fresh interpreter, stopped after ``timeout`` s; returns its messages.

  Its progress lines reach this process's stderr as they come; what it reported before
  a crash or a timeout is kept, followed by an ``"error"`` message.
  """
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cmd = [sys.executable, "-m", "benchmarks.gpu", "--worker", json.dumps(spec)]
  error = None
  try:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=max(timeout, 1.0),
                          cwd=root)
    out = proc.stdout
    if proc.returncode != 0:
      error = f"worker {spec.get('variant', spec['job'])} exited with {proc.returncode}"
  except subprocess.TimeoutExpired as e:
    out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    error = f"worker {spec.get('variant', spec['job'])} stopped after {timeout:.0f} s"
  messages = parse_messages(out)
  if error:
    messages.append(("error", error))
  return messages


def parse_messages(stdout: str) -> list[tuple[str, Any]]:
  """The ``(kind, data)`` messages a worker printed (other lines ignored)."""
  out = []
  for line in stdout.splitlines():
    if line.startswith(MESSAGE_PREFIX):
      m = json.loads(line[len(MESSAGE_PREFIX):])
      out.append((m["kind"], m["data"]))
  return out


def _print_message(kind: str, data: Any) -> None:
  print(MESSAGE_PREFIX + json.dumps({"kind": kind, "data": to_json(data)}), flush=True)


def run(quick: bool, *, variants: Sequence[str], batches: Sequence[int] | None = None,
        budget_s: float | None = None, isolated: bool | None = None) -> dict[str, Any]:
  """The whole check; returns the result (see :func:`write` and :func:`markdown`)."""
  plan = QUICK if quick else FULL
  batches = sorted(batches or plan.batches)
  budget_s = budget_s or plan.budget_s
  isolated = (not quick) if isolated is None else isolated
  start = time.time()
  end = start + budget_s

  def launch(spec: dict[str, Any], deadline: float) -> list[tuple[str, Any]]:
    if isolated:
      return run_isolated(spec, deadline + GRACE_S - time.time())
    return run_in_process(spec)

  result: dict[str, Any] = {"quick": quick, "machine": None, "ceilings": None,
                            "image_score": None, "hpnet": [], "errors": []}
  result["config"] = {
      "plan": "quick" if quick else "full", "budget_s": budget_s, "grace_s": GRACE_S,
      "isolated": isolated, "variants": {v: {"stream_heads": VARIANTS[v][0],
                                              "head_matmul_dtype": VARIANTS[v][1]}
                                          for v in variants},
      "batches": batches, "shape": dataclasses.asdict(plan.shape) | {"batch": None},
      "timing": {"min_steps": plan.min_steps, "max_steps": plan.max_steps,
                 "min_time_s": plan.min_time, "rate": "batch / median step wall time"},
      "profile_steps": plan.profile_steps,
      "xla_python_client_mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
      "flops": "useful: 3 x analytic forward (benchmarks.hpnet.forward_flops) per image",
      "peak_memory": "device memory_stats()['peak_bytes_in_use'] of the variant's process "
                     "after the batch size (ascending batches); None on a CPU",
  }

  def collect(messages: list[tuple[str, Any]]) -> None:
    for kind, data in messages:
      if kind == "hpnet":
        result["hpnet"].append(data)
      elif kind == "error":
        result["errors"].append(data)
      elif kind == "refused":
        raise ConfigError(f"python -m benchmarks.gpu: {data}")
      else:
        result[kind] = data

  _log(f"budget {budget_s:.0f} s; workers {'isolated' if isolated else 'in this process'}")
  collect(launch({"job": "machine", "quick": quick}, min(end, start + 0.3 * budget_s)))
  for i, variant in enumerate(variants):
    deadline = time.time() + (end - time.time()) / (len(variants) - i)
    collect(launch({"job": "hpnet", "quick": quick, "variant": variant, "batches": batches,
                    "deadline": deadline}, deadline))
  derive(result)
  result["wall_s"] = round(time.time() - start, 1)
  return result


def derive(result: dict[str, Any]) -> None:
  """Adds each HPNet row's useful TFLOP/s and its fractions of the matmul ceilings."""
  ceil = (result.get("ceilings") or {}).get("matmul_tflops", {})
  for row in result["hpnet"]:
    if row.get("status") != "ok":
      continue
    tflops = 3 * row["forward_gflops_per_image"] * row["images_per_s"] / 1e3
    row["train_tflops"] = _sig(tflops)
    for key, name in (("bfloat16", "fraction_of_bf16_ceiling"),
                      ("float32_default", "fraction_of_default_ceiling")):
      row[name] = _sig(tflops / ceil[key]) if ceil.get(key) else None


def markdown(result: dict[str, Any]) -> str:
  """The result as a Markdown page."""
  m = result.get("machine") or {}
  c = result.get("ceilings") or {}
  lines = [f"# GPU check: {m.get('machine', 'unknown device')}" + (
      " (quick smoke run: tiny shapes, numbers mean nothing)" if result["quick"] else ""), "",
      f"- device: {m.get('platform')} / {m.get('device_kind')}, {m.get('device_count')} "
      f"device(s); host CPU {m.get('cpu_model')}",
      "- versions: " + ", ".join(f"{k} {x}" for k, x in (m.get("versions") or {}).items() if x),
      f"- date {m.get('date')}; whole run {result.get('wall_s')} s of a "
      f"{result['config']['budget_s']:.0f} s budget; XLA_FLAGS={m.get('xla_flags')!r}", ""]
  if c:
    lines += ["## Ceilings", "", f"config: {json.dumps(c['config'])}", ""]
    lines += harness._table(["measure", "value"],
                            [[f"matmul TFLOP/s ({k})", v] for k, v in c["matmul_tflops"].items()]
                            + [["copy GB/s (bytes read)", c["copy_gbps"]]])
  s = result["config"]["shape"]
  lines += [f"## HPNet train step ({s['size']}x{s['size']}x{s['channels']}, "
            f"K={s['num_attributes']}, features {s['features']})", ""]
  rows = [[r["variant"], r["batch"], r["status"], r.get("images_per_s"), r.get("train_tflops"),
           r.get("fraction_of_bf16_ceiling"), r.get("fraction_of_default_ceiling"),
           r.get("first_step_s"), r.get("compile_s"), r.get("peak_mb"),
           (r.get("xla_memory") or {}).get("total_mb"), r.get("while_trip_counts"),
           r.get("loss_last"), r.get("error") or r.get("reason")] for r in result["hpnet"]]
  lines += harness._table(["variant", "batch", "status", "img/s", "useful TFLOP/s",
                           "of bf16 ceiling", "of default ceiling", "first step s", "compile s",
                           "peak MB", "XLA MB", "while trip counts", "last loss", "note"], rows)
  profiled = [r for r in result["hpnet"] if "profile" in r]
  if profiled:
    lines += ["Kernels per step (profile of the variant's smallest batch; "
              f"{(profiled[0]['profile'].get('counted_as') or 'see errors')}):", ""]
    lines += harness._table(
        ["variant", "batch", "kernels/step", "memcpy+memset/step", "HLO ops/step",
         "host launch calls/step", "error"],
        [[r["variant"], r["batch"], r["profile"].get("kernels_per_step"),
          r["profile"].get("copies_per_step"), r["profile"].get("hlo_ops_per_step"),
          r["profile"].get("host_launches_per_step"), r["profile"].get("error")]
         for r in profiled])
  score = result.get("image_score") or {}
  if score.get("status") == "ok":
    cfg = score["config"]
    lines += [f"## Image score ({cfg['model']}, {cfg['image_shape']}, batch {cfg['batch']})", ""]
    lines += harness._table(
        ["measure", "value"],
        [[f"img/s {k}", v] for k, v in score["images_per_s"].items()] +
        [["fused / plain forward time", score["fused_over_plain_time"]],
         ["tap bytes per image", score["tap_bytes_per_image"]],
         ["score alone: taps GB/s", score["score_only_tap_gbps"]],
         ["score alone: of copy bandwidth", score["score_only_fraction_of_copy"]],
         ["fused: taps GB/s", score["fused_tap_gbps"]],
         ["fused: of copy bandwidth", score["fused_fraction_of_copy"]]])
  errors = list(result["errors"]) + ([f"image score: {score['error']}"]
                                     if score.get("status") == "error" else [])
  if errors:
    lines += ["## Errors", ""] + [f"- {e}" for e in errors] + [""]
  return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out_dir: str) -> tuple[str, str]:
  """Writes ``<machine>.gpu_check[.quick].json`` and ``.md`` atomically; returns the paths."""
  machine = (result.get("machine") or {}).get("machine", "unknown-device")
  stem = os.path.join(out_dir, machine + ".gpu_check" + (".quick" if result["quick"] else ""))
  write_json(stem + ".json", result)
  write_text(stem + ".md", markdown(result))
  return stem + ".json", stem + ".md"


# ---------------------------------------------------------------------------
# Command line.

def _positive_ints(text: str) -> list[int]:
  try:
    values = [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    values = []
  if not values or min(values) < 1:
    raise ConfigError(f"python -m benchmarks.gpu: --batches expects comma-separated positive "
                      f"integers, e.g. 64,128; got {text!r}")
  return values


def _variants(text: str) -> list[str]:
  names = [x.strip() for x in text.split(",") if x.strip()]
  unknown = [n for n in names if n not in VARIANTS]
  if not names or unknown:
    raise ConfigError(f"python -m benchmarks.gpu: --variants expects a comma-separated subset "
                      f"of {','.join(VARIANTS)}; got {text!r}")
  return [v for v in VARIANTS if v in names]


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks.gpu",
                              description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny shapes on any device (CI smoke run)")
  p.add_argument("--out", default=harness.RESULTS_DIR, help="results directory")
  p.add_argument("--budget-s", type=str, default=None,
                 help=f"seconds of measuring (default {FULL.budget_s:.0f}; quick "
                      f"{QUICK.budget_s:.0f})")
  p.add_argument("--batches", default=None, help="comma-separated batch sizes (default "
                 f"{','.join(map(str, FULL.batches))})")
  p.add_argument("--variants", default=",".join(VARIANTS),
                 help=f"comma-separated subset of {','.join(VARIANTS)}")
  p.add_argument("--in-process", action="store_true",
                 help="run every worker in this process (the default with --quick)")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    worker(json.loads(args.worker), _print_message)
    return 0
  budget = None
  if args.budget_s is not None:
    try:
      budget = float(args.budget_s)
    except ValueError:
      budget = -1.0
    if not budget > 0:
      raise ConfigError(f"python -m benchmarks.gpu: --budget-s expects a positive number of "
                        f"seconds; got {args.budget_s!r}")
  batches = _positive_ints(args.batches) if args.batches is not None else None
  result = run(args.quick, variants=_variants(args.variants), batches=batches, budget_s=budget,
               isolated=False if args.in_process else None)
  jpath, mpath = write(result, args.out)
  print(f"wrote {jpath} and {mpath}")
  for r in result["hpnet"]:
    print(f"  {r['variant']:18s} batch {r['batch']:4d}: {r['status']:7s} "
          f"{r.get('images_per_s') or '':>10} img/s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
