"""The benchmark harness: runs suites in one process, records the machine, writes results.

``python -m benchmarks [--quick] [--suites hpnet,ceilings,...]`` (see
:mod:`benchmarks.__main__`) calls :func:`run_suites` and :func:`write_results`:
``benchmarks/results/<machine>.json`` and ``.md`` (``<machine>.quick.*`` for a quick
run, so a smoke run never overwrites real numbers), written atomically. ``<machine>``
is a slug of the device the suites ran on: the CPU model and core count, or the GPU
name when JAX's default device is a GPU (so GPU runs are recorded as a separate
machine).

Every suite is ``run(quick) -> dict``; a suite that raises is recorded with its error
and the others still run. Derived numbers that need two suites (HPNet's GFLOP/s as a
fraction of the matmul ceiling) and the project's targets are computed here.
"""
from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import re
import time
import traceback
from typing import Any, Callable

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# Targets on a CPU machine (issue 6): training at 64×64/K=40, batch 32.
TARGETS = {
    "train_64_ratio_vs_torch_eager": 2.5,      # at least
    "train_64_fraction_of_matmul_ceiling": 0.35,  # at least
    "train_64_peak_rss_mb": 3 * 1024,          # below
    "pruning_efficiency": 0.8,                 # at least, every pruned size
    "image_score_stored_fraction_of_copy": 0.5,  # at least
    "image_score_fused_over_forward": 1.2,     # at most, every model (best fused variant)
    # Issue 11 (CPU speed side by side):
    "train_64_ratio_vs_torch_compile": 2.0,    # at least: HPNet training
    "baseline_train_64_ratio_vs_torch_eager": 1.0,  # at least: the extractor's training
    "pruning_efficiency_at_half_channels": 0.8,  # at least, C' = C/2
}
AT_MOST = ("_mb", "_over_forward")


def _version(pkg: str) -> str | None:
  try:
    return importlib.metadata.version(pkg)
  except importlib.metadata.PackageNotFoundError:
    return None


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def slug(text: str) -> str:
  s = re.sub(r"\((r|tm|R|TM)\)", "", text)
  s = re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")
  return re.sub(r"-+", "-", s)


def machine_info() -> dict[str, Any]:
  """Device, versions, CPU model and thread counts: recorded beside every result."""
  import jax

  dev = jax.devices()[0]
  threads = len(os.sched_getaffinity(0))
  info: dict[str, Any] = {
      "platform": dev.platform,
      "device_kind": dev.device_kind,
      "device_count": jax.device_count(),
      "cpu_model": cpu_model(),
      "cpu_count": os.cpu_count(),
      "threads": threads,
      "python": platform.python_version(),
      "versions": {p: _version(p) for p in ("jax", "jaxlib", "flax", "optax", "numpy", "torch",
                                            "grain")},
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "load_average_start": [round(x, 2) for x in os.getloadavg()],
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  if dev.platform == "gpu":
    info["machine"] = "gpu-" + slug(dev.device_kind)
  else:
    info["machine"] = f"cpu-{slug(info['cpu_model'])}-{threads}t"
  return info


def suite_functions(hpnet_sizes: list[int] | None = None
                    ) -> dict[str, Callable[[bool], dict[str, Any]]]:
  """Suite name → ``run(quick)``; suites owned elsewhere are imported lazily."""

  def lazy(module: str, attr: str = "run") -> Callable[[bool], dict[str, Any]]:
    def call(quick: bool) -> dict[str, Any]:
      return getattr(importlib.import_module(module), attr)(quick)
    return call

  def hpnet(quick: bool) -> dict[str, Any]:
    import jax

    from benchmarks import hpnet as h
    return h.run(quick, gpu=jax.devices()[0].platform == "gpu", sizes=hpnet_sizes)

  return {
      "ceilings": lazy("benchmarks.ceilings"),
      "hpnet": hpnet,
      "pruning": lazy("benchmarks.hpnet", "run_pruning"),
      "image_score": lazy("benchmarks.image_score"),
      "data_pipeline": lazy("benchmarks.data_pipeline"),
  }


SUITES = ("ceilings", "hpnet", "pruning", "image_score", "data_pipeline")


def run_suites(names: list[str], quick: bool, log: Callable[[str], None] = print, *,
               hpnet_sizes: list[int] | None = None) -> dict[str, Any]:
  """Runs ``names`` in order; returns ``{"machine", "quick", "suites", "derived", "targets"}``."""
  fns = suite_functions(hpnet_sizes)
  unknown = [n for n in names if n not in fns]
  if unknown:
    raise ValueError(f"unknown suite(s) {unknown}; choose from {', '.join(fns)}")
  result: dict[str, Any] = {"machine": machine_info(), "quick": quick, "suites": {}}
  for name in names:
    log(f"[benchmarks] {name} ...")
    t = time.perf_counter()
    try:
      out = fns[name](quick)
    except Exception as e:  # recorded, and the other suites still run
      out = {"error": f"{type(e).__name__}: {e}",
             "traceback": traceback.format_exc(limit=4).splitlines()[-6:]}
    out["seconds"] = round(time.perf_counter() - t, 1)
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    result["suites"][name] = out
    log(f"[benchmarks] {name} done in {out['seconds']} s" +
        (f" (error: {out['error']})" if "error" in out else ""))
  result["derived"] = derived(result["suites"])
  result["targets"] = check_targets(result["derived"], result["suites"])
  return result


def derived(suites: dict[str, Any]) -> dict[str, Any]:
  """HPNet's achieved GFLOP/s as a fraction of the matmul ceiling (same run).

  The ceiling is the best float32 matmul rate seen in the run: the ceilings suite's and
  the one each JAX worker measures right after its steps. Load only ever lowers a
  measurement, so the best one is the closest to the machine's; a ceiling read at a
  busier moment than the model would flatter the fraction.
  """
  seen = [suites.get("ceilings", {}).get("matmul_ceiling_gflops")]
  seen += [r.get("matmul_gflops_after") for r in suites.get("hpnet", {}).get("runs", [])]
  seen = [x for x in seen if x]
  ceil = max(seen) if seen else None
  summary = suites.get("hpnet", {}).get("summary", {})
  out: dict[str, Any] = {"matmul_ceiling_gflops": ceil, "matmul_gflops_seen": seen}
  if not ceil:
    return out
  bf16 = suites.get("ceilings", {}).get("matmul_bf16_gflops")
  out["matmul_bf16_gflops"] = bf16
  for key, row in summary.items():
    # The bfloat16-GEMM variant against the bfloat16 ceiling (its heads' GEMMs run there).
    c = bf16 if key.split("/")[0].endswith("_bf16") else ceil
    for phase in ("train", "inference"):
      g = row.get(f"jax_{phase}_gflops")
      if g is not None and c:
        out[f"{key}/{phase}_fraction_of_matmul_ceiling"] = round(g / c, 3)
  return out


def check_targets(derived_: dict[str, Any], suites: dict[str, Any]) -> dict[str, Any]:
  """Each target with its measured value and whether it is met (None: not measured)."""
  summary = suites.get("hpnet", {}).get("summary", {})
  row = summary.get("hpnet/64x64x3_K40", {})
  rows = suites.get("pruning", {}).get("rows", [])
  pruned = [r["efficiency"] for r in rows if r.get("flop_reduction", 1) > 1]
  also = {"train_64_ratio_vs_torch_eager": row.get("train_ratio_jax_over_torch_eager_per_cpu_s")}
  score = suites.get("image_score", {})
  fused = [min(v["two_programs_over_plain_wall"], v["one_program_over_plain_wall"])
           for v in score.get("fused_vs_plain_forward", {}).values()]
  base = summary.get("baseline/64x64x3_K40", {})
  full = max((r["kept_channels"] for r in rows), default=0)
  half = [r["efficiency"] for r in rows if 2 * r["kept_channels"] == full]
  also.update(
      train_64_ratio_vs_torch_compile=row.get("train_ratio_jax_over_torch_compile_per_cpu_s"),
      baseline_train_64_ratio_vs_torch_eager=base.get(
          "train_ratio_jax_over_torch_eager_per_cpu_s"))
  values = {
      "train_64_ratio_vs_torch_compile": row.get("train_ratio_jax_over_torch_compile"),
      "baseline_train_64_ratio_vs_torch_eager": base.get("train_ratio_jax_over_torch_eager"),
      "pruning_efficiency_at_half_channels": half[0] if half else None,
      "train_64_ratio_vs_torch_eager": row.get("train_ratio_jax_over_torch_eager"),
      "train_64_fraction_of_matmul_ceiling":
          derived_.get("hpnet/64x64x3_K40/train_fraction_of_matmul_ceiling"),
      "train_64_peak_rss_mb": row.get("peak_rss_mb/jax"),
      "pruning_efficiency": min(pruned) if pruned else None,
      "image_score_stored_fraction_of_copy": score.get("stored_fraction_of_copy"),
      "image_score_fused_over_forward": max(fused) if fused else None,
  }
  out = {}
  for name, goal in TARGETS.items():
    v = values[name]
    at_most = name.endswith(AT_MOST)
    met = None if v is None else (v <= goal if at_most else v >= goal)
    out[name] = {"value": v, "goal": ("<= " if at_most else ">= ") + str(goal), "met": met}
    if also.get(name) is not None:
      out[name]["value_per_cpu_s"] = also[name]
  return out


from hpjax.core.io import write_text  # noqa: E402


def write_results(result: dict[str, Any], out_dir: str = RESULTS_DIR) -> tuple[str, str]:
  """Writes ``<machine>[.quick].json`` and ``.md`` atomically; returns their paths.

  Suites this run did not measure are kept from the file already there (each suite
  carries its own date and load), so ``--suites ceilings`` refreshes one suite without
  dropping the others; derived numbers and targets are recomputed over the merge.
  """
  stem = result["machine"]["machine"] + (".quick" if result["quick"] else "")
  jpath = os.path.join(out_dir, stem + ".json")
  mpath = os.path.join(out_dir, stem + ".md")
  try:
    with open(jpath) as f:
      old = json.load(f)
  except (OSError, ValueError):
    old = {}
  kept = {k: v for k, v in old.get("suites", {}).items() if k not in result["suites"]}
  if kept:
    result = {**result, "suites": {**kept, **result["suites"]}}
    result["derived"] = derived(result["suites"])
    result["targets"] = check_targets(result["derived"], result["suites"])
  write_text(jpath, json.dumps(result, indent=1, sort_keys=False) + "\n")
  write_text(mpath, markdown(result))
  return jpath, mpath


# ---------------------------------------------------------------------------
# Markdown report.

def _fmt(v: Any) -> str:
  if v is None:
    return "–"
  if isinstance(v, float):
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
  return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
  return lines + [""]


def markdown(result: dict[str, Any]) -> str:
  m = result["machine"]
  s = result["suites"]
  v = m["versions"]
  lines = [f"# Benchmarks: {m['machine']}" + (" (quick smoke run: sizes are tiny, numbers "
                                               "mean nothing)" if result["quick"] else ""), "",
           f"- device: {m['platform']} / {m['device_kind']}; CPU {m['cpu_model']}, "
           f"{m['cpu_count']} cores, {m['threads']} threads used (JAX and torch)",
           f"- versions: python {m['python']}, " + ", ".join(f"{k} {x}" for k, x in v.items() if x),
           f"- load average at start {m['load_average_start']} (a busy machine lowers every "
           f"number; ratios were measured side by side)",
           f"- date {m['date']}; XLA_FLAGS={m['xla_flags']!r}", ""]
  t = result.get("targets", {})
  if t:
    lines += ["## Targets", ""]
    lines += _table(["target", "goal", "measured", "met", "same, per CPU-second"],
                    [[k, x["goal"], x["value"], {True: "yes", False: "**no**", None: "–"}[x["met"]],
                      x.get("value_per_cpu_s")] for k, x in t.items()])
  c = s.get("ceilings", {})
  if "matmul_gflops" in c:
    lines += ["## Ceilings", "", f"config: {c['config']}", ""]
    lines += _table(["measure", "value"],
                    [[f"matmul GFLOP/s ({k})", x] for k, x in c["matmul_gflops"].items()] +
                    [["matmul GFLOP/s (jax, bfloat16 operands)", c.get("matmul_bf16_gflops")]] +
                    [[f"copy GB/s ({k})", x] for k, x in c["copy_gbps"].items()])
  h = s.get("hpnet", {})
  if "summary" in h:
    d = result.get("derived", {})
    lines += ["## HPNet: JAX vs PyTorch", "",
              f"Batch {h['config']['shapes'][0]['batch']}, torch threads "
              f"{h['config']['torch_threads']}, modes {h['config']['torch_modes']}. "
              f"Peak memory: {h['config']['peak_memory']}. FLOPs: {h['config']['flops']}. "
              f"JAX step: {h['config']['jax_step']}.", ""]
    rows = []
    for key, r in h["summary"].items():
      for phase in ("train", "inference"):
        rows.append([key, phase, r.get(f"{phase}_images_per_s/jax"),
                     r.get(f"{phase}_images_per_s/torch_eager"),
                     r.get(f"{phase}_images_per_s/torch_compile"),
                     r.get(f"{phase}_ratio_jax_over_torch_eager"),
                     r.get(f"{phase}_ratio_jax_over_torch_compile"),
                     r.get(f"{phase}_ratio_jax_over_torch_eager_per_cpu_s"),
                     r.get(f"{phase}_ratio_jax_over_torch_compile_per_cpu_s"),
                     r.get(f"jax_{phase}_gflops"),
                     d.get(f"{key}/{phase}_fraction_of_matmul_ceiling")])
    lines += _table(["model/shape", "phase", "JAX img/s", "torch eager", "torch.compile",
                     "JAX/eager", "JAX/compile", "JAX/eager per CPU-s", "JAX/compile per CPU-s",
                     "JAX GFLOP/s", "of matmul ceiling"], rows)
    lines += ["Ratios are of images/s (wall clock, median step); the per-CPU-second ratios "
              "divide images by the process's CPU seconds instead, which a shared machine's "
              "load moves much less. Matmul ceiling used for the fractions: "
              f"{d.get('matmul_ceiling_gflops')} GFLOP/s, the best of "
              f"{d.get('matmul_gflops_seen')} (ceilings suite, then each JAX worker); "
              f"the `hpnet_bf16` rows (heads' GEMMs on bfloat16 operands, in JAX and in "
              f"PyTorch) against the bfloat16 matmul ceiling, {d.get('matmul_bf16_gflops')} "
              "GFLOP/s.", ""]
    rows = [[key, r.get("peak_rss_mb/jax"), r.get("peak_rss_mb/torch_eager"),
             r.get("peak_rss_mb/torch_compile"), r.get("first_step_s/jax"),
             r.get("first_step_s/torch_eager"), r.get("first_step_s/torch_compile")]
            for key, r in h["summary"].items()]
    lines += _table(["model/shape", "peak RSS MB JAX", "torch eager", "torch.compile",
                     "first step s JAX", "torch eager", "torch.compile"], rows)
    xla = [[f"{r['model']}/{r['shape']}", r["train"]["xla_memory"], r["inference"]["xla_memory"]]
           for r in h.get("runs", []) if r.get("framework") == "jax" and "train" in r]
    if xla:
      lines += ["XLA memory_analysis (MB):", ""]
      lines += _table(["model/shape", "train step", "inference"], xla)
    errors = [r for r in h.get("runs", []) if "error" in r]
    for r in errors:
      lines += [f"- error in {r['spec']['framework']}/{r['spec']['mode']} "
                f"{r['spec']['model']}: {r['error']}"]
  p = s.get("pruning", {})
  if "rows" in p:
    lines += ["## Physically pruned HPNet (inference)", "", f"config: {p['config']}", ""]
    lines += _table(["kept channels", "GFLOP/image", "FLOP reduction", "best s/batch",
                     "speed-up", "efficiency", "efficiency (CPU time)"],
                    [[r["kept_channels"], r["forward_gflops_per_image"], r["flop_reduction"],
                      r["inference_s_best"], r["speedup"], r["efficiency"],
                      r.get("efficiency_cpu")] for r in p["rows"]])
  for name in ("image_score", "data_pipeline"):
    if name in s:
      lines += [f"## {name}", ""]
      lines += [f"- {k}: {json.dumps(x)}" for k, x in s[name].items()] + [""]
  errs = [f"- {n}: {x['error']}" for n, x in s.items() if "error" in x]
  if errs:
    lines += ["## Suite errors", ""] + errs + [""]
  lines += ["## Suite wall times (s)", ""]
  lines += [f"- {n}: {x.get('seconds')} (finished {x.get('finished')}, load average after: "
            f"{x.get('load_average_after')})" for n, x in s.items()]
  return "\n".join(lines) + "\n"
