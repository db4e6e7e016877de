"""Image decoding, center cropping and resizing shared by the real-data loaders.

Every decode goes through :func:`decode_image` (CelebA, TFDS: one expected format,
mode and size) or :func:`load_image` (the folder sources ``image_folder`` and
``attribute_table``: any JPEG/PNG/WebP), so a corrupt file, an unexpected format,
mode or size becomes one :class:`~hpjax.core.errors.DataError` naming the file,
whichever loader (raw files, TFDS, the preparation step) met it.

**The folder policy** (one for every folder source; docs/data.md, "Bring your own
data"), applied by :func:`load_image` in this order:

1. *Format* from the content, not the name: JPEG, PNG or WebP (:data:`FOLDER_FORMATS`).
2. *Orientation*: the EXIF orientation tag (JPEG, WebP; PNG when its ``eXIf`` chunk
   precedes the pixels) is applied, so an image is used as viewers show it (phone
   photos are stored sideways with a tag). Widths, heights and boxes are always of
   the oriented image.
3. *Colour*: an image is *grayscale* when its mode is a one-channel luminance mode
   (``1``, ``L``, ``LA``, ``I``, ``I;16``: :func:`is_grayscale_mode`), judged from the
   header; everything else (RGB, RGBA, palette, CMYK, YCbCr) is colour. A data set
   whose images are all grayscale is read as ``[H, W, 1]``; otherwise every image is
   RGB ``[H, W, 3]`` (grayscale ones replicated). Alpha is dropped, not composited
   (as torchvision's and Keras' loaders do); 16-bit grayscale becomes 8-bit
   (``round(v * 255 / 65535)``).
4. *Crop and size* (:func:`policy_box`): with ``image_size`` S, the largest centred
   square is cut out and resized to S x S with :data:`RESAMPLE` (bilinear with
   support scaling: antialiased when shrinking); non-square images lose equal
   margins on their long side (centre crop, not padding, as for CelebA). A JPEG
   at least twice S on its short side is decoded at a reduced DCT scale first
   (libjpeg's scaled decode through PIL's ``draft``; it keeps the short side >= S),
   which is several times faster on photos and then resized the same way. With
   ``image_size=None`` nothing is cut or resized: the images are used as they are
   and must all have one size.
"""
from __future__ import annotations

import dataclasses
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
  img = _identify(data, name, formats)
  # Size and mode come from the header: checking them before decoding keeps a
  # hostile header (e.g. a claimed 60000x60000 image) from allocating anything.
  if size is not None and tuple(img.size) != tuple(size):
    raise DataError(f"{name}: expected an image of {size[0]}x{size[1]} pixels (width x height), found {img.size[0]}x{img.size[1]}")
  if img.mode != mode:
    raise DataError(f"{name}: expected image mode {mode}, found {img.mode}")
  _load(img, name)
  return img


def _identify(data: bytes, name: str, formats: Sequence[str] | None) -> Image.Image:
  """Opens encoded bytes lazily (header only), or DataError naming ``name``."""
  kinds = "/".join(formats or ["image"])
  if not data:
    raise DataError(f"{name}: expected an encoded {kinds} file, found 0 bytes")
  try:
    with warnings.catch_warnings():
      # A huge declared size is reported as a size mismatch or decoded within
      # PIL's hard limit; PIL's own bomb warning would only be noise.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      return Image.open(io.BytesIO(data), formats=list(formats) if formats else None)
  except Image.UnidentifiedImageError:  # its text only repeats the (in-memory) file object
    raise DataError(f"{name}: expected a {kinds} image, cannot identify it (not a {kinds} file PIL can read)") from None
  except Exception as e:  # PIL raises several types (OSError, SyntaxError, DecompressionBombError...)
    raise DataError(f"{name}: expected a {kinds} image, cannot identify it ({_short(e)})") from None


def _load(img: Image.Image, name: str) -> None:
  """Decodes the pixels of a lazily opened image, or DataError naming ``name``."""
  try:
    img.load()
  except Exception as e:
    raise DataError(f"{name}: corrupt or truncated {img.format} data ({_short(e)})") from None


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


# --------------------------------------------------------------------------- the folder policy

# What the folder sources decode (by content; the file extensions they list are
# hpjax.data.folders.IMAGE_EXTENSIONS).
FOLDER_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def is_grayscale_mode(mode: str) -> bool:
  """Whether a PIL mode is a one-channel luminance mode (step 3 of the folder policy).

  Palette images count as colour even when their palette is gray: the rule reads
  the header only, never the pixels.
  """
  return mode in _GRAYSCALE_MODES


@dataclasses.dataclass(frozen=True)
class ImageHeader:
  """What an image file's header says, read without decoding its pixels.

  Attributes:
    width: width as displayed, i.e. after the EXIF orientation.
    height: height as displayed.
    grayscale: a one-channel luminance mode (:func:`is_grayscale_mode`).
    format: ``JPEG``, ``PNG`` or ``WEBP``.
    orientation: the EXIF orientation 1..8 applied (1: stored upright).
  """

  width: int
  height: int
  grayscale: bool
  format: str
  orientation: int = 1


def read_file(path: str, limit: int | None = None) -> bytes:
  """A file's bytes (the first ``limit`` only, if given), or one DataError line.

  Raises:
    DataError: nothing there, a folder, or unreadable (permissions, I/O error).
  """
  try:
    with open(path, "rb") as f:
      return f.read() if limit is None else f.read(limit)
  except FileNotFoundError:
    raise DataError(f"{path}: expected an image file, found nothing there (moved or deleted?)") from None
  except IsADirectoryError:
    raise DataError(f"{path}: expected an image file, found a folder") from None
  except OSError as e:
    raise DataError(f"{path}: expected a readable image file, got {type(e).__name__}: {e.strerror or e}") from None


def _orientation(img: Image.Image) -> int:
  """The EXIF orientation known from the header (1 when absent or invalid).

  PNG's ``eXIf`` chunk counts only when it precedes the pixels (PIL has it after
  opening): asking PIL for a later one would decode the whole image, and the
  header read and the decode must agree.
  """
  if img.format == "PNG" and "exif" not in img.info:
    return 1
  try:
    value = img.getexif().get(_EXIF_ORIENTATION, 1)
  except Exception:  # a malformed EXIF block is ignored, as viewers ignore it
    return 1
  return value if isinstance(value, int) and value in _UPRIGHT else 1


def _header(img: Image.Image) -> ImageHeader:
  o = _orientation(img)
  w, h = img.size
  if o >= 5:  # the four orientations that swap the axes
    w, h = h, w
  return ImageHeader(width=w, height=h, grayscale=is_grayscale_mode(img.mode),
                     format=str(img.format), orientation=o)


_HEAD_BYTES = 1 << 16


def read_header(path: str) -> ImageHeader:
  """The oriented size, colour and format of a JPEG/PNG/WebP file, without decoding it.

  Reads the first 64 KiB (where the header and EXIF sit), the whole file only
  when PIL cannot identify the image from them.

  Raises:
    DataError: missing, unreadable or empty file, or not a JPEG/PNG/WebP image.
  """
  head = read_file(path, _HEAD_BYTES)
  try:
    return _header(_identify(head, path, FOLDER_FORMATS))
  except DataError:
    if len(head) < _HEAD_BYTES:  # that was the whole file
      raise
  return _header(_identify(read_file(path), path, FOLDER_FORMATS))


def policy_box(width: int, height: int, image_size: int | None) -> tuple[int, int, int, int]:
  """The region of an oriented ``width x height`` image that the folder policy keeps.

  The centred square (:func:`center_square_box`) when resizing to ``image_size``,
  the whole image when ``image_size`` is None. Map points of the oriented image
  into the output with ``scale_points(points, policy_box(w, h, S), S)``.
  """
  if image_size is None:
    return 0, 0, width, height
  return center_square_box(width, height)


def load_image(path: str, *, image_size: int | None, channels: int,
               data: bytes | None = None) -> np.ndarray:
  """Decodes one image file with the folder policy (module docstring).

  Args:
    path: the file (named in errors).
    image_size: output side S (centre square, resized), or None (as it is).
    channels: 3 (RGB) or 1 (the data set is all grayscale; a colour image is
      then an error: the file changed since the folder was opened).
    data: the file's bytes if already read (else read from ``path``).

  Returns:
    ``uint8 [S, S, channels]`` (``[H, W, channels]`` when ``image_size`` is None).

  Raises:
    DataError: unreadable, not JPEG/PNG/WebP, corrupt or truncated, or colour
      where grayscale was expected.
  """
  if channels not in (1, 3):
    raise ValueError(f"channels: expected 1 or 3, got {channels}")
  img = _identify(read_file(path) if data is None else data, path, FOLDER_FORMATS)
  head = _header(img)
  if channels == 1 and not head.grayscale:
    raise DataError(f"{path}: expected a grayscale image like every other of its data set, found mode {img.mode} (file changed since the folder was opened?)")
  if image_size is not None and img.format == "JPEG":
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      img.draft(img.mode, (image_size, image_size))  # keeps both sides >= image_size
  _load(img, path)
  if head.orientation != 1:
    img = img.transpose(_UPRIGHT[head.orientation])
  img = _to_mode(img, "L" if channels == 1 else "RGB")
  return crop_resize(img, policy_box(img.width, img.height, image_size), image_size)


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
  """8-bit ``L`` or ``RGB`` (step 3 of the folder policy)."""
  if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
    wide = np.asarray(img, np.float64)
    img = Image.fromarray(np.clip(np.rint(wide * (255 / 65535)), 0, 255).astype(np.uint8), "L")
  if img.mode == mode:
    return img
  with warnings.catch_warnings():
    # "Palette images with Transparency expressed in bytes...": the alpha is dropped anyway.
    warnings.simplefilter("ignore", UserWarning)
    return img.convert(mode)
