"""Ground-truth attribute regions as boxes: mapped through the crop and resize, drawn as masks.

The localisation analysis (:mod:`hpjax.hpnet.analyses.attention`) scores attention
maps against ``regions: bool [B, K, H, W]``. The generated faces draw those masks
directly; the sources whose regions are rectangles (attribute tables with box or point
columns, CelebA's landmarks) carry them as ``"boxes": int32 [K, 4]`` instead, and
:func:`box_masks` draws the masks when they are scored. A box is 16 bytes per attribute
where a mask is ``H·W`` bytes (40 attributes at 128² are 655 KB per image, 13 times the
image), and every key of an example rides each training batch to the device.

Boxes are ``(x0, y0, x1, y1)``, half-open, in pixels of the output image: the region is
the pixels ``x0 <= x < x1``, ``y0 <= y < y1``. An empty box (``x0 >= x1`` or
``y0 >= y1``, written ``(0, 0, 0, 0)``) is "no region": the analysis never counts it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

NO_BOX = (0, 0, 0, 0)


def map_boxes(boxes: np.ndarray, crop: np.ndarray | Sequence[int], out_width: int,
              out_height: int) -> np.ndarray:
  """Maps boxes in source-image pixels into the cropped, resized output image.

  A source pixel ``i`` spans ``[i, i + 1)``; edges are mapped affinely (as the
  resize maps pixel edges), then widened to whole output pixels, so a box keeps
  every output pixel it overlaps and one smaller than an output pixel still marks
  that pixel. The result is clipped to the image; a box that ends up outside it, and
  a NaN box (no region), become :data:`NO_BOX`.

  Args:
    boxes: ``float [..., 4]`` ``(x0, y0, x1, y1)`` in source pixels (NaN: none).
    crop: the kept part of the source ``(left, top, right, bottom)``, ``[..., 4]``
      broadcasting against ``boxes`` (one per image, or one for all).
    out_width, out_height: the output image's size; the crop is scaled to it.

  Returns:
    ``int32 [..., 4]`` half-open output-pixel boxes.
  """
  b = np.asarray(boxes, np.float64)
  c = np.asarray(crop, np.float64)
  size = np.array([out_width, out_height], np.float64)
  origin = c[..., :2]
  scale = size / (c[..., 2:] - c[..., :2])
  with np.errstate(invalid="ignore"):
    lo = np.clip(np.floor((b[..., :2] - origin) * scale + 1e-9), 0, size)
    hi = np.clip(np.ceil((b[..., 2:] - origin) * scale - 1e-9), 0, size)
  out = np.concatenate(np.broadcast_arrays(lo, hi), axis=-1)
  empty = np.isnan(out).any(-1) | (out[..., 0] >= out[..., 2]) | (out[..., 1] >= out[..., 3])
  out[empty] = NO_BOX
  return out.astype(np.int32)


def box_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """Draws half-open boxes ``int [..., 4]`` as ``bool [..., height, width]`` masks."""
  b = np.asarray(boxes)
  ys = np.arange(height)[:, None]
  xs = np.arange(width)[None, :]
  x0, y0, x1, y1 = (b[..., i, None, None] for i in range(4))
  return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
  """The bounding box ``int32 [..., 4]`` of each mask ``bool [..., H, W]`` (an empty
  mask gives :data:`NO_BOX`); :func:`box_masks` of it covers the mask."""
  m = np.asarray(masks, bool)
  rows, cols = m.any(-1), m.any(-2)
  h, w = m.shape[-2:]
  y0 = np.argmax(rows, -1)
  y1 = h - np.argmax(rows[..., ::-1], -1)
  x0 = np.argmax(cols, -1)
  x1 = w - np.argmax(cols[..., ::-1], -1)
  out = np.stack([x0, y0, x1, y1], -1).astype(np.int32)
  out[~rows.any(-1)] = NO_BOX
  return out
