"""Fuzzing every parser: random or mutated bytes give a valid result or a DataError, nothing else.

Each property starts from a valid file of the real format and mutates it
(flip, truncate, insert, overwrite), or feeds arbitrary bytes. A per-example
deadline makes a parser that stalls on some input fail instead of hanging.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data_fixtures as fx
from hpjax.data import celeba, cifar10, idx
from hpjax.core.errors import DataError
from hpjax.data.image import decode_image

# Derandomized and small by default so CI is fast and repeatable; set
# HPJAX_FUZZ_EXAMPLES=5000 for a long, randomized hunt.
_LONG = int(os.environ.get("HPJAX_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_LONG or 60, deadline=2000, derandomize=not _LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw, seed: bytes):
  """``seed`` with 1..4 random edits, or arbitrary bytes."""
  if draw(st.integers(0, 9)) == 0:
    return draw(st.binary(max_size=2 * len(seed) + 16))
  data = bytearray(seed)
  for _ in range(draw(st.integers(1, 4))):
    op = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "delete"]))
    pos = draw(st.integers(0, max(len(data) - 1, 0)))
    if op == "flip" and data:
      data[pos] ^= 1 << draw(st.integers(0, 7))
    elif op == "truncate":
      del data[pos:]
    elif op == "insert":
      data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    elif op == "overwrite":
      chunk = draw(st.binary(min_size=1, max_size=8))
      data[pos:pos + len(chunk)] = chunk
    elif op == "delete":
      del data[pos:pos + draw(st.integers(1, 16))]
  return bytes(data)


def _valid_or_data_error(fn, *args):
  try:
    return fn(*args)
  except DataError as e:
    msg = str(e)
    assert msg and "\n" not in msg, msg
    return None


# --------------------------------------------------------------------------- IDX

IDX_SEED = fx.idx_bytes(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))
IDX_SEED_I32 = fx.idx_bytes(np.arange(6, dtype=np.int32).reshape(2, 3))


@FUZZ
@given(st.one_of(mutated(IDX_SEED), mutated(IDX_SEED_I32)))
def test_fuzz_idx_bytes(blob):
  out = _valid_or_data_error(idx.parse_idx_bytes, blob, "f")
  if out is not None:
    assert out.size * out.dtype.itemsize == len(blob) - 4 - 4 * out.ndim


@FUZZ
@given(mutated(IDX_SEED), st.booleans())
def test_fuzz_idx_files_plain_and_gzipped(blob, gz):
  import gzip

  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "x.gz" if gz else "x")
    with open(path, "wb") as f:
      f.write(gzip.compress(blob) if gz else blob)
    _valid_or_data_error(idx.read_idx, path)


GZ_SEED = __import__("gzip").compress(IDX_SEED, mtime=0)


@FUZZ
@given(mutated(GZ_SEED))
def test_fuzz_gzip_stream(blob):
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "x.gz")
    with open(path, "wb") as f:
      f.write(b"\x1f\x8b" + blob[2:] if len(blob) >= 2 else blob)
    _valid_or_data_error(idx.read_idx, path)


# --------------------------------------------------------------------------- CelebA text


def _attr_text(n=3):
  rows = [f"{i + 1:06d}.jpg " + " ".join(["-1", " 1"] * 20) for i in range(n)]
  return f"{n}\n" + " ".join(celeba.ATTRIBUTES) + "\n" + "\n".join(rows) + "\n"


ATTR_SEED = _attr_text().encode()
PART_SEED = b"000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n"
LM_SEED = ("2\n" + " ".join(celeba.LANDMARKS) + "\n000001.jpg " + " ".join(["69", "109"] * 5)
           + "\n000002.jpg " + " ".join(["70", "110"] * 5) + "\n").encode()


@FUZZ
@given(st.one_of(mutated(ATTR_SEED), st.text(max_size=300).map(str.encode)))
def test_fuzz_attribute_text(blob):
  out = _valid_or_data_error(celeba.parse_attributes, blob.decode("latin-1"))
  if out is not None:
    names, labels = out
    assert labels.shape == (len(names), 40) and set(np.unique(labels)) <= {0, 1}


@FUZZ
@given(st.one_of(mutated(PART_SEED), st.text(max_size=200).map(str.encode)))
def test_fuzz_partition_text(blob):
  out = _valid_or_data_error(celeba.parse_partition, blob.decode("latin-1"))
  if out is not None:
    assert set(out[1].tolist()) <= {0, 1, 2} and len(out[0]) == len(out[1])


@FUZZ
@given(mutated(LM_SEED))
def test_fuzz_landmark_text(blob):
  out = _valid_or_data_error(celeba.parse_landmarks, blob.decode("latin-1"))
  if out is not None:
    assert out[1].shape == (len(out[0]), 5, 2)


@FUZZ
@given(mutated(ATTR_SEED))
def test_fuzz_text_files_on_disk(blob):
  # read_text adds the UTF-8 and size checks in front of the parser.
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, celeba.ATTR_FILE)
    with open(path, "wb") as f:
      f.write(blob)
    _valid_or_data_error(lambda: celeba.parse_attributes(celeba.read_text(path), path))


# --------------------------------------------------------------------------- CIFAR

_labels, _images = fx.cifar_arrays(2, seed=3)
BIN_SEED = np.concatenate([_labels[:, None], _images.transpose(0, 3, 1, 2).reshape(2, 3072)], 1).tobytes()
PY2_SEED = fx.py2_pickle({b"labels": [int(x) for x in _labels], b"data": _images.transpose(0, 3, 1, 2).reshape(2, 3072),
                          b"batch_label": b"fuzz"})
PY3_SEED = __import__("pickle").dumps({b"labels": [1, 2], b"data": np.zeros((2, 3072), np.uint8)}, protocol=4)


@FUZZ
@given(mutated(BIN_SEED))
def test_fuzz_cifar_binary(blob):
  out = _valid_or_data_error(cifar10.parse_bin_records, blob, "b.bin")
  if out is not None:
    assert out[1].shape == (len(out[0]), 3072) and out[0].max() <= 9


@FUZZ
@given(st.one_of(mutated(PY2_SEED), mutated(PY3_SEED)))
def test_fuzz_cifar_pickle(blob):
  out = _valid_or_data_error(cifar10.parse_pickle_batch, blob, "data_batch_1")
  if out is not None:
    labels, pixels = out
    assert pixels.dtype == np.uint8 and pixels.shape == (len(labels), 3072)


# --------------------------------------------------------------------------- JPEG

_rng = np.random.default_rng(0)
JPEG_SEED = fx.jpeg_bytes(fx.smooth_image(_rng, 24, 16))


@FUZZ
@given(mutated(JPEG_SEED), st.booleans())
def test_fuzz_jpeg(blob, check_size):
  img = _valid_or_data_error(lambda: decode_image(blob, "x.jpg", size=(16, 24) if check_size else None))
  if img is not None:
    assert img.mode == "RGB" and (not check_size or img.size == (16, 24))
    np.asarray(img)


@FUZZ
@given(st.one_of(mutated(ATTR_SEED), mutated(LM_SEED)))
def test_fast_and_line_by_line_parsers_agree(blob):
  # The vectorised whole-file check must never accept what the line-by-line
  # parser rejects, nor read different values.
  text = blob.decode("latin-1")
  parse = celeba.parse_landmarks if text.split("\n", 2)[1:2] == [" ".join(celeba.LANDMARKS)] else celeba.parse_attributes
  fast = _valid_or_data_error(parse, text)
  real = celeba._fast_table
  celeba._fast_table = lambda *a: None
  try:
    slow = _valid_or_data_error(parse, text)
  finally:
    celeba._fast_table = real
  assert (fast is None) == (slow is None)
  if fast is not None:
    assert fast[0] == slow[0]
    np.testing.assert_array_equal(fast[1], slow[1])
