"""Throughput of the generated attribute faces (images, labels and regions per second).

Run: ``python -m benchmarks.synthetic_data`` (``--batches 3`` for a quicker run).

For each image size, one :class:`hpjax.data.synthetic.SyntheticFaces` source renders
a warm-up batch, then ``--batches`` batches of ``--batch-size`` fresh indices (never
a repeated index, so nothing is cached) with ``get_batch``, single process. Reported
per size: the median and the best batch, in images per second, with regions. The
target is >= 5,000 images/s at 64x64.

Timings on a shared machine move with its load, so the load average is printed
beside them, with two less disturbed estimates of what the code costs: the best
batch, and images per CPU-second (``time.process_time``; rendering is
single-threaded NumPy, so on an idle machine this equals the wall-clock rate).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from hpjax.data.synthetic import SyntheticFaces


def time_batches(image_size: int, batch_size: int, batches: int) -> tuple[np.ndarray, np.ndarray]:
  """Wall and CPU seconds per ``get_batch`` call, each ``float64 [batches]``.

  One warm-up call comes first (first-touch allocations, the noise bank).
  """
  src = SyntheticFaces("train", image_size=image_size,
                       num_examples=(batches + 1) * batch_size)
  src.get_batch(np.arange(batch_size))
  wall, cpu = [], []
  for b in range(1, batches + 1):
    indices = np.arange(b * batch_size, (b + 1) * batch_size)
    w, c = time.perf_counter(), time.process_time()
    src.get_batch(indices)
    wall.append(time.perf_counter() - w)
    cpu.append(time.process_time() - c)
  return np.asarray(wall), np.asarray(cpu)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--batches", type=int, default=10)
  args = parser.parse_args(argv)

  print(f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}")
  print(f"SyntheticFaces.get_batch, batch {args.batch_size}, {args.batches} batches, "
        "image + label + regions")
  print(f"{'size':>6} {'median img/s':>13} {'best img/s':>11} {'ms/batch':>9} "
        f"{'img per CPU-s':>14}")
  for size in args.sizes:
    wall, cpu = time_batches(size, args.batch_size, args.batches)
    print(f"{size:>6} {args.batch_size / np.median(wall):>13,.0f} "
          f"{args.batch_size / wall.min():>11,.0f} {1e3 * np.median(wall):>9.1f} "
          f"{args.batch_size / np.median(cpu):>14,.0f}")

if __name__ == "__main__":
  main()
