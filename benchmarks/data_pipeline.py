"""Images per second of the real-data loaders, on generated files in the real formats.

Usage::

  python -m benchmarks.data_pipeline [--quick]

Measures, side by side in one run:

* CelebA-format JPEG (178x218) decode + centre crop + resize to 64, in this
  process, and through grain with 2 worker processes
  (``MapDataset.source(src).batch(...).to_iter_dataset().mp_prefetch(...)``);
* the prepared ``.npy`` cache (random batches via ``get_batch``);
* IDX (the real Fashion-MNIST when installed, else generated) and CIFAR-10
  binary (random batches via ``get_batch``).

``--quick`` is a smoke run: with so few batches its grain figure is dominated
by worker start-up; quote the full run. :func:`run` returns the numbers for
the project's benchmark harness.
"""
from __future__ import annotations

from benchmarks.timing import best_seconds

import argparse
import io
import json
import os
import platform
import tempfile
import time

import numpy as np

_BATCH = 64


def _write_celeba(root: str, n: int, seed: int = 0) -> None:
  """A CelebA-layout directory of ``n`` 178x218 JPEGs with photo-like noise."""
  from PIL import Image

  from hpjax.data import celeba

  rng = np.random.default_rng(seed)
  img_dir = os.path.join(root, celeba.IMAGE_DIR)
  os.makedirs(img_dir)
  names = [f"{i + 1:06d}.jpg" for i in range(n)]
  y, x = np.mgrid[0:218, 0:178]
  for f in names:
    base = rng.uniform(0, 255, 3) * (0.5 + 0.5 * np.sin(x[..., None] / rng.uniform(5, 30) + y[..., None] / rng.uniform(5, 30)))
    img = np.clip(base + rng.normal(0, 12, (218, 178, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    # CelebA's files are quality-95-ish JPEGs of about 10 KB.
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    with open(os.path.join(img_dir, f), "wb") as fh:
      fh.write(buf.getvalue())
  attrs = rng.choice(["-1", " 1"], (n, 40))
  with open(os.path.join(root, celeba.ATTR_FILE), "w") as fh:
    fh.write(f"{n}\n" + " ".join(celeba.ATTRIBUTES) + "\n")
    fh.writelines(f + " " + " ".join(r) + "\n" for f, r in zip(names, attrs))
  with open(os.path.join(root, celeba.PARTITION_FILE), "w") as fh:
    # Everything in train: the benchmark reads one split.
    fh.writelines(f"{f} 0\n" for f in names)


def _rate(fn, n_items: int, repeats: int) -> float:
  """Best-of-``repeats`` items per second of ``fn()`` after one warm-up call."""
  return n_items / best_seconds(fn, repeats)


def _random_batches(src, n_batches: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  idx = [np.sort(rng.integers(0, len(src), _BATCH)) for _ in range(n_batches)]

  def go():
    for i in idx:
      b = src.get_batch(i)
      assert b["image"].shape[0] == _BATCH

  return go


def run(quick: bool = False) -> dict:
  """Measures every loader; returns ``{"config", "env", "images_per_s"}``."""
  import grain

  from hpjax.data import celeba, cifar10, idx, prepare

  n_jpeg = 96 if quick else 400
  repeats = 1 if quick else 3
  rates: dict[str, float] = {}
  with tempfile.TemporaryDirectory() as d:
    root = os.path.join(d, "celeba")
    _write_celeba(root, n_jpeg)
    src = celeba.CelebA(root, "train", image_size=64)

    def single():
      for i in range(len(src)):
        src[i]

    rates["celeba_jpeg_single_process"] = _rate(single, len(src), repeats)

    from absl import flags

    # grain reads absl flags in its worker machinery; outside an absl app nothing
    # parses them, so take the defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()

    def through_grain() -> tuple[float, float]:
      # Several epochs in one iterator: the first batch pays for starting the
      # workers (process spawn + imports), the rest is the steady-state rate.
      epochs = 3 if quick else 5
      ds = grain.MapDataset.source(src).repeat(epochs).batch(_BATCH).to_iter_dataset().mp_prefetch(
          grain.MultiprocessingOptions(num_workers=2))
      t0 = time.perf_counter()
      it = iter(ds)
      n = next(it)["image"].shape[0]
      t1 = time.perf_counter()
      rest = sum(b["image"].shape[0] for b in it)
      t2 = time.perf_counter()
      assert n + rest == epochs * len(src)
      return rest / (t2 - t1), t1 - t0

    rates["celeba_jpeg_grain_2_workers"], startup_s = through_grain()

    cache = os.path.join(d, "cache")
    t = time.perf_counter()
    prepare.prepare_celeba(root, cache, image_size=64, workers=0, log=lambda *a: None)
    rates["celeba_prepare_in_process"] = n_jpeg / (time.perf_counter() - t)
    prepared = celeba.CelebAPrepared(cache, "train")
    nb = 50 if quick else 400
    rates["celeba_prepared_cache"] = _rate(_random_batches(prepared, nb), nb * _BATCH, repeats)

    if os.path.isdir(idx.FASHION_MNIST_ROOT):
      t = time.perf_counter()
      fm = idx.FashionMNIST("train")
      rates["fashion_mnist_open_gz_60000"] = 60_000 / (time.perf_counter() - t)
      rates["idx_fashion_mnist_random_batches"] = _rate(_random_batches(fm, nb), nb * _BATCH, repeats)
    raw_idx = os.path.join(d, "idx")
    os.makedirs(raw_idx)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 10_000), ("t10k", 100)):
      for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28), np.uint8)), ("labels-idx1", rng.integers(0, 10, n, np.uint8))):
        head = bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
        with open(os.path.join(raw_idx, f"{prefix}-{kind}-ubyte"), "wb") as fh:
          fh.write(head + arr.tobytes())
    rates["idx_uncompressed_memmap_random_batches"] = _rate(_random_batches(idx.MNIST("train", raw_idx), nb), nb * _BATCH, repeats)

    cdir = os.path.join(d, "cifar", "cifar-10-batches-bin")
    os.makedirs(cdir)
    per = 1000 if quick else 10_000
    for stem in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
      recs = rng.integers(0, 256, (per, 3073), np.uint8)
      recs[:, 0] %= 10
      recs.tofile(os.path.join(cdir, stem + ".bin"))
    rates["cifar10_binary_random_batches"] = _rate(_random_batches(cifar10.Cifar10Binary(os.path.dirname(cdir), "train"), nb), nb * _BATCH, repeats)

  return {
      "config": {"quick": quick, "jpeg_files": n_jpeg, "jpeg_size": "178x218", "image_size": 64, "batch": _BATCH,
                 "repeats": repeats, "timing": "best of repeats after a warm-up",
                 "grain_worker_startup_s": round(startup_s, 2)},
      "env": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
              "numpy": np.__version__, "pillow": __import__("PIL").__version__, "grain": _version("grain")},
      "images_per_s": {k: round(v, 1) for k, v in rates.items()},
  }


def _version(pkg: str) -> str:
  from importlib.metadata import version

  return version(pkg)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks.data_pipeline", description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="fewer files and one repeat (seconds, not minutes)")
  args = p.parse_args(argv)
  res = run(args.quick)
  print(json.dumps(res, indent=1))
  jpeg = res["images_per_s"]
  print(f"grain 2 workers / single process: {jpeg['celeba_jpeg_grain_2_workers'] / jpeg['celeba_jpeg_single_process']:.2f}x; "
        f"prepared cache / JPEG single process: {jpeg['celeba_prepared_cache'] / jpeg['celeba_jpeg_single_process']:.0f}x")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
