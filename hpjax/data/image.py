"""Image decoding, center cropping and resizing shared by the real-data loaders.

Every decode goes through :func:`decode_image`, so a corrupt file, an unexpected
format, mode or size becomes one :class:`~hpjax.core.errors.DataError` naming the
file, whichever loader (raw CelebA, TFDS, the preparation step) met it.
"""
from __future__ import annotations

import io
import warnings
from typing import Sequence

import numpy as np
from PIL import Image

from hpjax.core.errors import DataError

# Bilinear with PIL's support scaling is an antialiased area-like filter when
# shrinking (178 -> 64), cheap enough for on-the-fly decoding, and the one
# filter every path (raw, prepared cache, TFDS) uses, so their arrays match.
RESAMPLE = Image.Resampling.BILINEAR


def decode_image(
    data: bytes,
    name: str,
    *,
    formats: Sequence[str] | None = ("JPEG",),
    mode: str = "RGB",
    size: tuple[int, int] | None = None,
) -> Image.Image:
  """Decodes encoded image bytes, checking format, mode and size.

  Args:
    data: the encoded file contents.
    name: the file (or record) name used in error messages.
    formats: PIL format names accepted (``None``: any PIL can read).
    mode: the PIL mode required, e.g. ``"RGB"``; images are never converted
      silently, since a grayscale file in a colour data set is a broken copy.
    size: ``(width, height)`` required, or ``None``.

  Returns:
    The fully decoded PIL image.

  Raises:
    DataError: empty, truncated or corrupt data, or a format, mode or size other
      than the expected ones.
  """
  if not data:
    raise DataError(f"{name}: expected an encoded {'/'.join(formats or ['image'])} file, found 0 bytes")
  try:
    with warnings.catch_warnings():
      # A huge declared size is reported below as a size mismatch; PIL's own
      # bomb warning would only be noise.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      img = Image.open(io.BytesIO(data), formats=list(formats) if formats else None)
  except Exception as e:  # PIL raises several types (UnidentifiedImageError, OSError, SyntaxError...)
    raise DataError(f"{name}: expected a {'/'.join(formats or ['image'])} image, cannot identify it ({_short(e)})") from None
  # Size and mode come from the header: checking them before decoding keeps a
  # hostile header (e.g. a claimed 60000x60000 image) from allocating anything.
  if size is not None and tuple(img.size) != tuple(size):
    raise DataError(f"{name}: expected an image of {size[0]}x{size[1]} pixels (width x height), found {img.size[0]}x{img.size[1]}")
  if img.mode != mode:
    raise DataError(f"{name}: expected image mode {mode}, found {img.mode}")
  try:
    img.load()
  except Exception as e:
    raise DataError(f"{name}: corrupt or truncated {img.format} data ({_short(e)})") from None
  return img


def _short(e: BaseException) -> str:
  """One-line description of an exception for an error message."""
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def center_square_box(width: int, height: int) -> tuple[int, int, int, int]:
  """The largest centred square, as a PIL box ``(left, top, right, bottom)``.

  For CelebA's aligned 178x218 images this is ``(0, 20, 178, 198)``: the full
  width and the rows 20..197, which keeps the whole face (the alignment puts the
  eyes near row 110) and drops forehead/neck margins equally.
  """
  side = min(width, height)
  left = (width - side) // 2
  top = (height - side) // 2
  return left, top, left + side, top + side


def crop_resize(img: Image.Image, box: tuple[int, int, int, int], image_size: int | None) -> np.ndarray:
  """Crops ``box`` out of ``img`` and resizes it to a square.

  Args:
    img: a decoded PIL image.
    box: ``(left, top, right, bottom)`` in pixels.
    image_size: output side; ``None`` keeps the crop's own size.

  Returns:
    ``uint8 [image_size, image_size, channels]`` (channels = 3 for RGB, 1 for L).
  """
  if image_size is None or (box[2] - box[0] == image_size and box[3] - box[1] == image_size):
    out = img.crop(box)
  else:
    # resize(box=...) filters straight from the source region in one pass; at
    # the crop's edges the filter may read the pixels just outside it, as a
    # downscale of the whole image would (values within 1 of crop-then-resize).
    out = img.resize((image_size, image_size), RESAMPLE, box=box)
  arr = np.asarray(out, dtype=np.uint8)
  return arr[..., None] if arr.ndim == 2 else arr


def scale_points(points: np.ndarray, box: tuple[int, int, int, int], image_size: int | None) -> np.ndarray:
  """Maps pixel coordinates of the source image into the cropped, resized image.

  Args:
    points: ``[..., 2]`` as ``(x, y)`` in source pixels.
    box: the crop box ``(left, top, right, bottom)``.
    image_size: output side (``None``: the crop's own size).

  Returns:
    ``int32 [..., 2]``, rounded to the nearest pixel. Points outside the crop
    land outside ``[0, image_size)`` and are kept, not clipped.
  """
  side = box[2] - box[0]
  scale = 1.0 if image_size is None else image_size / side
  xy = (np.asarray(points, np.float64) - np.array([box[0], box[1]], np.float64)) * scale
  return np.rint(xy).astype(np.int32)
