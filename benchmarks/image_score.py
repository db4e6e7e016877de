"""Image-score throughput: stored path vs NumPy loop vs copy bandwidth; fused vs plain forward.

Run: ``python -m benchmarks.image_score`` (add ``--quick`` for a seconds-long run).

One run measures, on the same SmallCNN activations written to disk with
:class:`hpjax.image_score.TapWriter` (and kept in the page cache):

* copy bandwidth: ``np.copyto`` of a large float32 array, 1 and 2 threads
  (bytes copied per second, i.e. bytes *read*), and a plain ``np.sum`` over the
  stored memory-mapped taps (the read-only floor of any scorer);
* ``score_stored`` (memory-mapped ``.npy``, one jitted chunk scorer): GB/s of
  activations read, and its fraction of the best copy bandwidth;
* ``score_numpy_loop`` (per-image NumPy) on a subset: GB/s read;
* ``make_fused_scorer`` (two programs, the default, and one program) vs the
  plain jitted forward on the same batches: the time ratio (the target is
  ≤ 1.2), for SmallCNN and, outside quick mode, ResNet18 at width 1/4.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from hpjax import image_score as isc
from hpjax.image_score.models import ResNet18, SmallCNN


from benchmarks.ceilings import numpy_copy_gbps  # noqa: E402
from benchmarks.timing import best_seconds as _best_time  # noqa: E402


def run(quick: bool = False) -> dict[str, Any]:
  """Runs the benchmark and returns its numbers and configuration."""
  load_before = os.getloadavg()[0]
  num_images = 1024 if quick else 12288
  loop_images = 256 if quick else 1024
  batch = 256
  chunk_size = 2048  # score_stored's default
  repeats = 2 if quick else 3
  model = SmallCNN()
  rng = jax.random.key(0)
  variables = jax.jit(model.init)(rng, jnp.zeros((1, 28, 28, 1)))
  apply = functools.partial(model.apply, train=False)
  forward = jax.jit(apply)
  images = jax.random.uniform(jax.random.key(1), (num_images, 28, 28, 1))
  labels = np.arange(num_images) % 10

  with tempfile.TemporaryDirectory() as tmp:
    # Activations written batch by batch from forward passes (never all in memory).
    shapes = {k: v.shape[1:] for k, v in jax.eval_shape(apply, variables, images[:batch])[1]
              ["taps"].items()}
    predicted = np.empty((num_images,), np.int32)
    with isc.TapWriter(tmp, shapes, num_images) as writer:
      for start in range(0, num_images, batch):
        logits, aux = forward(variables, images[start:start + batch])
        writer.write(start, aux["taps"])
        predicted[start:start + batch] = np.asarray(jnp.argmax(logits, -1))
    taps = isc.load_taps(tmp)
    total_bytes = sum(x.nbytes for x in taps.values())
    reference = isc.fit_reference(taps, labels, 10, batch_size=batch)

    copy1 = numpy_copy_gbps(min(total_bytes, 1 << 29), 1, repeats)
    copy2 = numpy_copy_gbps(min(total_bytes, 1 << 29), 2, repeats)
    copy_best = max(copy1, copy2)

    read_s = _best_time(lambda: [np.add.reduce(x, axis=None) for x in taps.values()], repeats)
    stored_s = _best_time(
        lambda: isc.score_stored(reference, tmp, predicted, chunk_size=chunk_size), repeats)
    sub = {k: v[:loop_images] for k, v in taps.items()}
    loop_s = _best_time(lambda: isc.score_numpy_loop(reference, sub, predicted[:loop_images]), 1)
    loop_bytes = sum(x.nbytes for x in sub.values())
    stored = isc.score_stored(reference, tmp, predicted, chunk_size=chunk_size)
    loop = isc.score_numpy_loop(reference, sub, predicted[:loop_images])
    max_abs_diff = float(np.max(np.abs(stored[:loop_images] - loop)))

  fused = {"smallcnn": fused_ratios(model, variables, images, reference, batch, repeats)}
  if not quick:
    fused["resnet18_width_0.25"] = _resnet_fused(repeats)

  return {
      "config": {"num_images": num_images, "tap_shapes": {k: list(v) for k, v in shapes.items()},
                 "stored_bytes": total_bytes, "chunk_size": chunk_size, "batch": batch,
                 "numpy_loop_images": loop_images, "quick": quick},
      "device": str(jax.devices()[0]), "platform": platform.platform(),
      "cpu_count": os.cpu_count(), "load_average_before": load_before,
      "versions": {"jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__},
      "copy_gbps_1_thread": copy1,
      "copy_gbps_2_threads": copy2,
      "numpy_sum_gbps": total_bytes / read_s / 1e9,
      "stored_gbps": total_bytes / stored_s / 1e9,
      "stored_fraction_of_copy": total_bytes / stored_s / 1e9 / copy_best,
      "numpy_loop_gbps": loop_bytes / loop_s / 1e9,
      "stored_speedup_vs_numpy_loop": (total_bytes / stored_s) / (loop_bytes / loop_s),
      "stored_vs_loop_max_abs_diff": max_abs_diff,
      "fused_vs_plain_forward": fused,
      "load_average_after": os.getloadavg()[0],
  }


def fused_ratios(model: Any, variables: Any, images: jax.Array, reference: isc.Reference,
                 batch: int, repeats: int) -> dict[str, float]:
  """Time of forward+score over time of the plain jitted forward, same batches.

  Interleaved repeats so that load from other processes hits all alike; CPU time
  (all threads of this process) is reported beside wall time because it is far
  less sensitive to other processes on a shared machine.
  """
  apply = functools.partial(model.apply, train=False)
  plain = jax.jit(lambda v, x: apply(v, x)[0])
  fns = {"plain": lambda v, x: plain(v, x),
         "two_programs": isc.make_fused_scorer(apply, reference),
         "one_program": isc.make_fused_scorer(apply, reference, single_program=True)}
  batches = [images[s:s + batch] for s in range(0, images.shape[0] - batch + 1, batch)]

  def run_all(fn):
    jax.block_until_ready([fn(variables, x) for x in batches])

  best = {k: [np.inf, np.inf] for k in fns}
  for fn in fns.values():
    run_all(fn)  # compile
  for _ in range(repeats + 2):
    for k, fn in fns.items():
      wall, cpu = _timed(functools.partial(run_all, fn))
      best[k] = [min(best[k][0], wall), min(best[k][1], cpu)]
  out = {"plain_forward_s": best["plain"][0], "images": len(batches) * batch}
  for k in ("two_programs", "one_program"):
    out[f"{k}_over_plain_wall"] = best[k][0] / best["plain"][0]
    out[f"{k}_over_plain_cpu"] = best[k][1] / best["plain"][1]
  return out


def _resnet_fused(repeats: int) -> dict[str, float]:
  """The fused ratios for ResNet18 at width 1/4 on 32×32×3 (more taps per FLOP)."""
  model = ResNet18(width=0.25)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  images = jax.random.uniform(jax.random.key(1), (1024, 32, 32, 3))
  _, aux = jax.jit(functools.partial(model.apply, train=False))(variables, images[:256])
  reference = isc.fit_reference(aux["taps"], np.arange(256) % 10, 10)
  return fused_ratios(model, variables, images, reference, 128, repeats)


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
  """(wall seconds, CPU seconds of this process) of one call."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sizes, seconds-long run")
  args = parser.parse_args()
  print(json.dumps(run(quick=args.quick), indent=1))


if __name__ == "__main__":
  main()
