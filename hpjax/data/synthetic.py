"""Procedurally generated face-like images with 14 CelebA attributes and their regions.

Real CelebA cannot be fetched on the machines this project runs on, so hpjax draws
its own multi-attribute faces (project spec, part C). Every image carries visible
evidence for each present attribute (glasses frames, a smiling mouth curve, a hat,
hair of a given colour, ...) and, for every attribute, a ground-truth region mask of
where that evidence is (or would be, when the attribute is absent). The regions turn
the attention pictures of Kimura & Tanaka (2019, "New Perspective of Interpretability
of Deep Neural Networks", Fig. 4) from something one looks at into something one can
measure.

Design, in short (the full description with base rates is ``docs/synthetic_data.md``):

* **Counter-based randomness.** Every random number of image ``i`` is a hash of
  ``(seed, split, i, field)`` (splitmix64 in uint64 NumPy), never a draw from a
  sequential generator. An example is therefore the same whatever batch it is
  rendered in, random access is O(1) at any data set size, and splits never share
  images.
* **Latents, then rendering.** :meth:`SyntheticFaces.latents` returns the labels and
  the nuisance uniforms of a batch; :meth:`SyntheticFaces.render` draws them. Tests
  and analyses can edit the labels and re-render the *same* face without (or with) an
  attribute, e.g. to check that an attribute changes pixels only inside its region.
* **Vectorised painter's algorithm.** Shapes are boolean masks computed by
  broadcasting per-image ``[batch, 1, width]`` and ``[batch, height, 1]`` coordinate
  factors; each layer writes its id into a ``uint8 [batch, height, width]`` layer map,
  and one gather from per-image colour palettes paints the image. A lighting
  gradient and pixel noise (windows of a fixed noise bank) are applied last. There
  is no Python loop over images: batches are drawn in cache-sized chunks, and small
  features (eyes, mouth, hat) only on the band of rows that can hold them.

Per-image and per-pixel floats see only ``+ - * /``, ``abs``, comparisons and casts:
NumPy's SIMD kernels for transcendental functions (``sin``, ``exp``) may round a
vector body and its scalar tail differently, which would make an image depend on
its position in the batch.
"""
from __future__ import annotations

import operator
from typing import Sequence

import numpy as np

from hpjax.core.errors import DataError

# The 14 attributes, spelled and ordered as in CelebA's list_attr_celeba.txt (the
# 40 CelebA columns are alphabetical and these keep that order), so a model trained
# here can be compared column by column with one trained on the matching CelebA subset.
ATTRIBUTES: tuple[str, ...] = (
    "Bald",
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Eyeglasses",
    "Heavy_Makeup",
    "Mouth_Slightly_Open",
    "Mustache",
    "Pale_Skin",
    "Rosy_Cheeks",
    "Smiling",
    "Wearing_Hat",
    "Wearing_Lipstick",
)

# Default number of examples per split (any ``num_examples`` works: images are
# generated on demand).
SPLIT_SIZES: dict[str, int] = {"train": 20000, "val": 2000, "test": 2000}

MIN_IMAGE_SIZE = 16

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_ATTR = {name: k for k, name in enumerate(ATTRIBUTES)}

# Label model. Probabilities are chosen so every base rate lands between ~10% and
# ~50% and the dependencies mirror CelebA's (docs/synthetic_data.md lists the
# measured rates). Conditional ones are (given the condition, given its absence).
P_HAT = 0.20
P_BALD_NO_HAT = 0.15
# Hair colour among people whose hair shows (cumulative: black, blond, brown; the
# rest have grey or auburn hair, which has no label).
HAIR_COLOUR_CDF = (0.36, 0.62, 0.90)
P_BANGS_WITH_HAIR = 0.35
P_SMILING = 0.48
P_MOUTH_OPEN = (0.72, 0.15)  # given Smiling
P_MAKEUP = 0.38
P_LIPSTICK = (0.90, 0.25)    # given Heavy_Makeup
P_MUSTACHE = (0.03, 0.28)    # given Wearing_Lipstick (in CelebA, men rarely wear it)
P_ROSY = (0.32, 0.07)        # given Heavy_Makeup
P_PALE = 0.20
P_EYEGLASSES = 0.15

# Names of the per-image uniform fields. Field ids are positions in this tuple, so
# appending a field keeps every existing image unchanged; reordering changes them.
_FIELDS: tuple[str, ...] = (
    # labels
    "hat", "bald", "hair_colour", "bangs", "smiling", "mouth_open", "makeup",
    "lipstick", "mustache", "rosy", "pale", "eyeglasses",
    # geometry
    "cx", "cy", "scale", "aspect", "feature_dx", "eye_dy", "hair_length",
    "smile_depth", "neutral_depth", "open_gap", "hat_style",
    # colours
    "skin_tone", "skin_r", "skin_g", "skin_b", "bg_r", "bg_g", "bg_b",
    "hair_brightness", "other_hair", "brow", "shadow_colour", "iris_colour",
    "lipstick_colour", "mustache_shade", "frame_colour", "hat_r", "hat_g", "hat_b",
    # lighting and noise
    "light_x", "light_y", "brightness", "lens", "noise_row", "noise_offset",
)
_F = {name: j for j, name in enumerate(_FIELDS)}
NUM_NUISANCE_FIELDS = len(_FIELDS)

# Layer ids of the painter's algorithm, in drawing order (later ids paint over
# earlier ones); each is also the row of the per-image colour palette.
(_BG, _HAIR, _SKIN, _HIGHLIGHT, _BROW, _SHADOW, _SCLERA, _IRIS, _NOSE, _CHEEK,
 _LIPS, _OPENING, _MUSTACHE, _BANGS, _FRAME, _HAT, _BRIM) = range(17)
_NUM_LAYERS = 17

# Colour tables (RGB, 0..255).
_HAIR_COLOURS = np.array(
    [[35, 28, 25], [222, 192, 120], [112, 72, 42]], np.float32)  # black, blond, brown
_OTHER_HAIR = np.array([[150, 150, 156], [168, 72, 38]], np.float32)  # grey, auburn
_PALE_SKIN = np.array([240, 221, 210], np.float32)
_SKIN_LIGHT = np.array([224, 182, 146], np.float32)
_SKIN_DARK = np.array([98, 64, 46], np.float32)
_SHADOWS = np.array(
    [[135, 80, 165], [70, 110, 195], [40, 140, 140], [170, 115, 55]], np.float32)
_IRISES = np.array([[70, 45, 30], [45, 70, 105], [55, 85, 55], [25, 25, 25]], np.float32)
_LIPSTICKS = np.array(
    [[200, 25, 45], [175, 15, 60], [220, 50, 85], [150, 20, 30]], np.float32)
_NATURAL_LIP = np.array([172, 96, 92], np.float32)
_DEEP_LIP = np.array([110, 15, 50], np.float32)
_FRAMES = np.array([[20, 20, 22], [95, 58, 30], [30, 42, 95], [155, 155, 160]], np.float32)
_SCLERA_COLOUR = np.array([236, 233, 226], np.float32)
_OPENING_COLOUR = np.array([58, 18, 24], np.float32)
_CHEEK_PINK = np.array([232, 84, 118], np.float32)
# Brows and mustache are dark brown whatever the hair colour, so that hair colour
# shows only in the hair regions.
_BROW_COLOUR = np.array([62, 46, 38], np.float32)
_MUSTACHE_COLOUR = np.array([48, 34, 28], np.float32)

# Noise bank: rows of i.i.d. Gaussian pixel noise whose standard deviation grows
# linearly across rows, so picking a row also picks the image's noise level.
_NOISE_ROWS = 16
_NOISE_STD = (2.0, 10.0)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """The splitmix64 finaliser, element-wise on a uint64 array (wraps mod 2**64).

  Args:
    x: ``uint64`` array of any shape with ``ndim >= 1`` (0-d inputs would turn
      into NumPy scalars, whose wrap-around raises overflow warnings).

  Returns:
    ``uint64`` array of the same shape; a bijection of ``x``.
  """
  z = x + _GOLDEN
  z = (z ^ (z >> np.uint64(30))) * _MIX1
  z = (z ^ (z >> np.uint64(27))) * _MIX2
  return z ^ (z >> np.uint64(31))


def nuisance_uniforms(seed: int, split_id: int, indices: np.ndarray) -> np.ndarray:
  """Per-image uniforms from a counter-based hash of ``(seed, split, index, field)``.

  Args:
    seed: data set seed, ``0 <= seed < 2**63``.
    split_id: 0 (train), 1 (val) or 2 (test).
    indices: ``int64 [batch]`` example indices.

  Returns:
    ``float32 [batch, NUM_NUISANCE_FIELDS]`` values in ``[0, 1)``, multiples of
    ``2**-24`` (exact in float32, so nothing downstream depends on rounding).
  """
  h = _splitmix64(np.array([seed], np.uint64))
  h = _splitmix64(h ^ np.uint64(split_id))
  h = _splitmix64(h ^ np.asarray(indices).astype(np.uint64))
  fields = np.arange(NUM_NUISANCE_FIELDS, dtype=np.uint64)
  z = _splitmix64(h[:, None] ^ (fields[None, :] * _GOLDEN))
  return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def sample_labels(u: np.ndarray) -> np.ndarray:
  """Draws the attribute labels from the label fields of the uniforms.

  The dependency rules hold exactly: a hat hides all hair (no hair colour, no
  Bangs, not Bald); Bald excludes every hair colour and Bangs; at most one hair
  colour is set. Conditional rates: Smiling raises P(Mouth_Slightly_Open),
  Heavy_Makeup raises P(Wearing_Lipstick) and P(Rosy_Cheeks), Wearing_Lipstick
  lowers P(Mustache).

  Args:
    u: ``float32 [batch, NUM_NUISANCE_FIELDS]`` from :func:`nuisance_uniforms`.

  Returns:
    ``int32 [batch, len(ATTRIBUTES)]`` labels in {0, 1}.
  """
  col = lambda name: u[:, _F[name]]
  hat = col("hat") < P_HAT
  bald = ~hat & (col("bald") < P_BALD_NO_HAT)
  hair_shows = ~hat & ~bald
  c = col("hair_colour")
  black = hair_shows & (c < HAIR_COLOUR_CDF[0])
  blond = hair_shows & (c >= HAIR_COLOUR_CDF[0]) & (c < HAIR_COLOUR_CDF[1])
  brown = hair_shows & (c >= HAIR_COLOUR_CDF[1]) & (c < HAIR_COLOUR_CDF[2])
  bangs = hair_shows & (col("bangs") < P_BANGS_WITH_HAIR)
  smiling = col("smiling") < P_SMILING
  mouth_open = col("mouth_open") < np.where(smiling, *P_MOUTH_OPEN)
  makeup = col("makeup") < P_MAKEUP
  lipstick = col("lipstick") < np.where(makeup, *P_LIPSTICK)
  mustache = col("mustache") < np.where(lipstick, *P_MUSTACHE)
  rosy = col("rosy") < np.where(makeup, *P_ROSY)
  pale = col("pale") < P_PALE
  glasses = col("eyeglasses") < P_EYEGLASSES
  by_name = {
      "Bald": bald, "Bangs": bangs, "Black_Hair": black, "Blond_Hair": blond,
      "Brown_Hair": brown, "Eyeglasses": glasses, "Heavy_Makeup": makeup,
      "Mouth_Slightly_Open": mouth_open, "Mustache": mustache, "Pale_Skin": pale,
      "Rosy_Cheeks": rosy, "Smiling": smiling, "Wearing_Hat": hat,
      "Wearing_Lipstick": lipstick,
  }
  return np.stack([by_name[name] for name in ATTRIBUTES], axis=1).astype(np.int32)


def noise_bank(image_size: int) -> np.ndarray:
  """The fixed bank of pixel-noise fields for one image size.

  Args:
    image_size: image height and width.

  Returns:
    ``int8 [_NOISE_ROWS, 2 * image_size**2 * 3]``: each row is twice as long as
    one image's noise so that any window of ``image_size**2 * 3`` values starting
    in the first half is a full noise field (an image picks a row and a start).
  """
  # A fixed generator seed (not the data set seed): the bank is a rendering
  # constant, like the colour tables; which window an image sees is hashed.
  rng = np.random.default_rng(20190417 + image_size)
  n = image_size * image_size * 3
  std = np.linspace(*_NOISE_STD, _NOISE_ROWS, dtype=np.float64)[:, None]
  noise = np.rint(rng.standard_normal((_NOISE_ROWS, 2 * n)) * std)
  return np.clip(noise, -127, 127).astype(np.int8)


def _pick(table: np.ndarray, u: np.ndarray) -> np.ndarray:
  """Rows of ``table [n, 3]`` chosen by uniforms ``u [batch]``; ``[batch, 3]``."""
  idx = np.minimum((u * len(table)).astype(np.int64), len(table) - 1)
  return table[idx]


def _ellipse(x, y, x0, y0, rx, ry, rows=None) -> np.ndarray:
  """Inside-ellipse mask from separable coordinates.

  Args:
    x: ``[batch, 1, width]`` horizontal coordinates.
    y: ``[batch, height, 1]`` vertical coordinates.
    x0, y0, rx, ry: centre and semi-axes, scalars or ``[batch]``.
    rows: optional ``bool [batch, height, 1]``; rows where it is False are outside.

  Returns:
    ``bool [batch, height, width]``.
  """
  ex = ((x - _b(x0)) / _b(rx)) ** 2
  ey = ((y - _b(y0)) / _b(ry)) ** 2
  if rows is not None:
    ey = np.where(rows, ey, np.float32(np.inf))
  # Comparing a [B, H, 1] array with a [B, 1, W] one is the only full-size
  # operation: one pass over the pixels per ellipse.
  return ey <= 1.0 - ex


def _rect(x, y, x0, y0, hx, hy) -> np.ndarray:
  """Inside-rectangle mask (centre ``x0, y0``, half sizes ``hx, hy``); ``bool [B, H, W]``."""
  return (np.abs(x - _b(x0)) < _b(hx)) & (np.abs(y - _b(y0)) < _b(hy))


def _b(v) -> np.ndarray | float:
  """Per-image ``[batch]`` values broadcast against ``[batch, H, W]``; scalars pass through."""
  return v[:, None, None] if isinstance(v, np.ndarray) else v


def _at_least(size, px_per_unit, min_px):
  """A size in face units, raised so that it spans at least ``min_px`` pixels.

  A half-size of 0.5 px guarantees a band contains a pixel centre; 0.75 px does the
  same for an ellipse's semi-axes. Small images keep every feature (and every
  region) non-empty this way.
  """
  return np.maximum(np.float32(size), np.float32(min_px) / px_per_unit)


def _paint(ids: np.ndarray, mask: np.ndarray, layer: int, on: np.ndarray | None = None):
  """Paints ``layer`` over ``ids [B, H, W]`` where ``mask`` (and ``on [B, 1, 1]``) holds.

  Layer ids grow in drawing order, so "the last layer drawn wins" is an element-wise
  maximum: cheaper than ``np.where``/``np.putmask``, which branch per pixel.
  """
  value = np.uint8(layer) if on is None else on.astype(np.uint8) * np.uint8(layer)
  np.maximum(ids, mask.view(np.uint8) * value, out=ids)


# Pixels per rendering chunk: 64 images of 64x64 keep a float32 per-pixel
# temporary at 1 MiB, near the L2 cache; whole 256-image batches ran slower.
_CHUNK_PIXELS = 2**18


def render(labels: np.ndarray, u: np.ndarray, bank: np.ndarray, image_size: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """Draws a batch of faces and the region of every attribute.

  Rendering takes the labels as given (it does not re-apply the dependency rules),
  so an edited label vector draws the same face with or without that attribute.
  Where labels contradict each other the drawing is still defined: a hat hides
  hair, Bald removes hair, hair colour priority is black > blond > brown.

  Face coordinates: ``X`` is horizontal in units of the face's half-width (face
  edge at ``|X| = 1``), ``Y`` vertical in units of its half-height, pointing down.
  Eyes sit at ``Y ~ -0.17``, nose at ``0.17``, mustache at ``0.32``, mouth at ``0.55``,
  and their horizontal position shifts with a small per-image yaw.

  Args:
    labels: ``int32 [batch, len(ATTRIBUTES)]`` in {0, 1}.
    u: ``float32 [batch, NUM_NUISANCE_FIELDS]`` nuisance uniforms.
    bank: ``int8 [rows, 2 * image_size**2 * 3]`` from :func:`noise_bank`.
    image_size: image height and width, ``>= MIN_IMAGE_SIZE``.

  Returns:
    ``(images, regions)``: ``uint8 [batch, image_size, image_size, 3]`` and
    ``bool [batch, len(ATTRIBUTES), image_size, image_size]``.
  """
  batch = len(labels)
  images = np.empty((batch, image_size, image_size, 3), np.uint8)
  regions = np.zeros((batch, len(ATTRIBUTES), image_size, image_size), bool)
  has = {name: labels[:, k].astype(bool) for name, k in _ATTR.items()}
  # Per-image colours of every layer, packed as RGBA in uint32 [batch, layers].
  palette = np.zeros((batch, _NUM_LAYERS, 4), np.uint8)
  palette[..., :3] = _palette(has, lambda name: u[:, _F[name]])
  palette = palette.view(np.uint32)[..., 0]
  # A loop over cache-sized chunks of images (not over images): every image is
  # drawn by the same element-wise arithmetic whichever chunk it falls in.
  chunk = max(1, _CHUNK_PIXELS // (image_size * image_size))
  for start in range(0, batch, chunk):
    part = slice(start, start + chunk)
    _render_chunk(labels[part], u[part], palette[part], bank, image_size, images[part],
                  regions[part])
  return images, regions


def _row_slice(cy, b, size: int, y_top, y_bottom) -> slice:
  """Image rows holding face-``Y`` in ``[y_top, y_bottom]`` for every image of a chunk.

  Features occupy a band of rows (eyes, mouth, hat); computing their masks on the
  union of that band over the chunk's images, instead of on whole images, halves
  the work. The 2-pixel margin covers the minimum pixel sizes of tiny images.

  Args:
    cy, b: ``float32 [batch]`` face centre row (fraction of the height) and half-height.
    size: image size in pixels.
    y_top, y_bottom: band limits in face units, scalars or ``[batch]``.

  Returns:
    A row slice of the image.
  """
  top = np.floor(((cy + y_top * b) * size).min()) - 2
  bottom = np.ceil(((cy + y_bottom * b) * size).max()) + 2
  return slice(int(max(top, 0)), int(min(bottom, size)))


def _render_chunk(labels, u, palette, bank, size, images, regions) -> None:
  """:func:`render` for one chunk, writing into ``images`` and zeroed ``regions``."""
  f32 = np.float32
  batch = len(labels)
  col = lambda name: u[:, _F[name]]
  has = {name: labels[:, k].astype(bool) for name, k in _ATTR.items()}
  flag = {name: v[:, None, None] for name, v in has.items()}
  region = lambda name, rows=slice(None): regions[:, _ATTR[name], rows]

  # ---- geometry (per image, float32 [B]) ----
  # Ranges keep the hat's crown, the brim and the hair inside the image with a
  # margin (tests check that no region touches the border).
  cx = f32(0.43) + f32(0.14) * col("cx")
  cy = f32(0.52) + f32(0.08) * col("cy")
  scale = f32(0.88) + f32(0.24) * col("scale")
  a = f32(0.22) * scale                                            # half-width
  b = f32(0.29) * scale * (f32(0.94) + f32(0.12) * col("aspect"))  # half-height
  ax = a * f32(size)  # pixels per X unit
  by = b * f32(size)  # pixels per Y unit
  fx = f32(-0.08) + f32(0.16) * col("feature_dx")  # small yaw: features shift sideways
  eye_y = f32(-0.17) + f32(0.04) * col("eye_dy")
  hair_len = f32(0.1) + f32(0.8) * col("hair_length")
  neutral_d = f32(-0.05) + f32(0.07) * col("neutral_depth")
  # A smile moves the middle of the mouth by at least a pixel, so it stays visible
  # at small sizes.
  smile_d = np.maximum(f32(0.12) + f32(0.06) * col("smile_depth"), neutral_d + f32(1.0) / by)
  open_g = np.maximum(f32(0.07) + f32(0.04) * col("open_gap"), f32(0.6) / by)

  grid = (np.arange(size, dtype=f32) + f32(0.5)) / f32(size)
  x = (grid[None, None, :] - cx[:, None, None]) / a[:, None, None]  # [B, 1, W]
  y = (grid[None, :, None] - cy[:, None, None]) / b[:, None, None]  # [B, H, 1]
  xf = x - fx[:, None, None]   # feature-centred
  xa = np.abs(xf)              # folded: one shape covers both eyes / cheeks
  a_over_b = a / b             # converts X-unit lengths to Y units (circles in pixels)
  # Row bands (see _row_slice): top of the head, eyes, nose-to-chin. Each must hold
  # every shape computed on it; the extents are noted at each shape.
  top_rows = _row_slice(cy, b, size, -1.45, -0.45)
  eye_rows = _row_slice(cy, b, size, eye_y - 0.45, eye_y + 0.35)
  low_rows = _row_slice(cy, b, size, 0.0, 1.0)
  y_top, y_eye, y_low = y[:, top_rows], y[:, eye_rows], y[:, low_rows]

  # ---- shapes (bool [B, rows, W]), drawn or not depending on labels ----
  face = _ellipse(x, y, 0.0, 0.0, 1.0, 1.0)
  face_eye, face_low = face[:, eye_rows], face[:, low_rows]
  hair = _ellipse(x, y, 0.0, -0.12, 1.3, 1.18, rows=y <= _b(hair_len)) & ~face
  bangs = face & (y < -0.45)
  # Features that take their colour from the skin are clipped to the face, so that
  # Pale_Skin changes pixels only inside the face even when the minimum pixel sizes
  # of tiny images would push them past its edge.
  highlight = _ellipse(x, y_top, -0.3, -0.72, _at_least(0.28, ax, 0.75),  # Y -0.84..-0.60
                       _at_least(0.12, by, 0.75)) & face[:, top_rows]
  # Eye band: brows reach eye_y - 0.29, shadow eye_y - 0.26, glasses eye_y -+ 0.26.
  brows = _rect(xa, y_eye, 0.38, eye_y - 0.25, 0.17, _at_least(0.035, by, 0.5))
  shadow = _ellipse(xa, y_eye, 0.38, eye_y - 0.13, _at_least(0.24, ax, 0.75),
                    _at_least(0.13, by, 0.75)) & face_eye
  sclera = _ellipse(xa, y_eye, 0.38, eye_y, _at_least(0.15, ax, 0.75),
                    _at_least(0.07, by, 0.5))
  iris_r = _at_least(0.07, ax, 0.5)
  iris = _ellipse(xa, y_eye, 0.38, eye_y, iris_r, iris_r * a_over_b)
  # Low band: nose from Y 0.12, cheeks 0.10..0.46, mustache 0.21..0.43, mouth
  # 0.33..0.90.
  nose = _ellipse(xf, y_low, 0.0, 0.17, _at_least(0.09, ax, 0.5),
                  _at_least(0.05, by, 0.5)) & face_low
  # Radius 0.24 (0.17 until 2026-12-01: 9 pixels at 32×32 were too few to learn).
  cheek_r = _at_least(0.24, ax, 1.0)
  cheeks = _ellipse(xa, y_low, 0.52, 0.28, cheek_r, cheek_r * a_over_b) & face_low
  # At least two pixel rows: a one-row bar vanished into dark skin at 32×32 (no model
  # learned Mustache there; docs/training.md).
  mustache = _rect(xf, y_low, 0.0, 0.32, 0.27, _at_least(0.06, by, 1.0))

  # Mouth: lips are a band of half-height t around the curve
  # y = 0.55 + d (1 - (X/w)^2), d > 0 bending the middle down (corners up: a smile);
  # an open mouth splits the band with a dark lens of half-height g (1 - (X/w)^2).
  w = f32(0.36)
  lens_profile = f32(1.0) - np.minimum((xf / w) ** 2, f32(1.0))   # [B, 1, W]
  in_cols = (xf > -w) & (xf < w)
  # 1 px: the upper and lower lip strips around an open mouth each keep a pixel row.
  lip_t = _at_least(0.06, by, 1.0)[:, None, None]
  # Half-heights per column; columns outside the mouth get -1 (an empty band).
  half = lambda g, t: np.where(in_cols, _b(g) * lens_profile + t, f32(-1.0))
  smiling = has["Smiling"]
  d = np.where(smiling, smile_d, neutral_d)
  g = np.where(has["Mouth_Slightly_Open"], open_g, f32(0.0))
  dist = np.abs(y_low - (f32(0.55) + _b(d) * lens_profile))
  opening = dist < half(g, 0.0)
  mouth = dist < half(g, lip_t)           # lips and opening
  lips = mouth & ~opening & face_low
  # The same mouth with the other smile state and with the mouth open, for regions.
  other_d = np.where(smiling, neutral_d, smile_d)
  other_dist = np.abs(y_low - (f32(0.55) + _b(other_d) * lens_profile))
  mouth_other_smile = other_dist < half(g, lip_t)
  mouth_open = dist < half(open_g, lip_t)

  # Eyeglasses: two rings (circles in pixel space) with a bridge and temples.
  ring_r = f32(0.27)
  ring_t = _at_least(0.05, ax, 0.5)
  dy_x = (y_eye - _b(eye_y)) * _b(f32(1.0) / a_over_b)  # [B, rows, 1] in X units
  d2 = (xa - f32(0.38)) ** 2 + dy_x ** 2                # [B, rows, W]
  disc = d2 < _b((ring_r + ring_t) ** 2)
  lens = d2 <= _b((ring_r - ring_t) ** 2)
  ring_ty = ring_t * a_over_b
  bridge = _rect(xf, y_eye, 0.0, eye_y - 0.03, 0.38 - ring_r + ring_t, ring_ty)
  temples = (xa > 0.38 + ring_r) & ((np.abs(y_eye - _b(eye_y)) < _b(ring_ty)) & face_eye)
  sides = bridge | temples
  frame = (disc & ~lens) | sides

  # Hat: a dome or a box crown (per image), and a brim across the forehead; Y from
  # -1.38 to -0.51.
  is_dome = col("hat_style") < 0.5
  dome = _ellipse(x, y_top, 0.0, -0.55, 0.95, 0.83, rows=(y_top <= -0.55) & _b(is_dome))
  box = _rect(x, y_top, 0.0, -0.95, np.where(is_dome, f32(0.0), f32(0.85)), 0.42)
  crown = dome | box
  brim = _rect(x, y_top, 0.0, -0.58, 1.4, _at_least(0.07, by, 0.5))
  hat = crown | brim

  # ---- layer map (painter's algorithm) ----
  # Layer ids grow in drawing order and _paint keeps the maximum, so the bands can
  # be painted in any order.
  hat_on = flag["Wearing_Hat"]
  hair_on = ~hat_on & ~flag["Bald"]
  ids = np.zeros((batch, size, size), np.uint8)
  ids_top, ids_eye, ids_low = ids[:, top_rows], ids[:, eye_rows], ids[:, low_rows]
  _paint(ids, hair, _HAIR, hair_on)
  _paint(ids, face, _SKIN)
  _paint(ids_top, highlight, _HIGHLIGHT, flag["Bald"])
  _paint(ids_eye, brows, _BROW)
  _paint(ids_eye, shadow, _SHADOW, flag["Heavy_Makeup"])
  _paint(ids_eye, sclera, _SCLERA)
  _paint(ids_eye, iris, _IRIS)
  _paint(ids_low, nose, _NOSE)
  _paint(ids_low, cheeks, _CHEEK, flag["Rosy_Cheeks"])
  _paint(ids_low, lips, _LIPS)
  _paint(ids_low, opening, _OPENING)
  _paint(ids_low, mustache, _MUSTACHE, flag["Mustache"])
  _paint(ids, bangs, _BANGS, flag["Bangs"] & hair_on)
  _paint(ids_eye, frame, _FRAME, flag["Eyeglasses"])
  _paint(ids_top, crown, _HAT, hat_on)
  _paint(ids_top, brim, _BRIM, hat_on)

  # ---- colours, lighting (a linear gradient and a brightness), lens tint, noise ----
  lx = f32(0.4) * (col("light_x") - f32(0.5))
  ly = f32(0.4) * (col("light_y") - f32(0.5))
  bright = f32(0.85) + f32(0.25) * col("brightness")
  gain = ((_b(bright) + _b(bright * lx) * (f32(2.0) * grid[None, None, :] - f32(1.0)))
          + _b(bright * ly) * (f32(2.0) * grid[None, :, None] - f32(1.0)))  # [B, H, W]
  gain_eye = gain[:, eye_rows]
  lens_tint = _b(f32(0.72) + f32(0.2) * col("lens"))
  np.copyto(gain_eye, gain_eye * lens_tint, where=lens & flag["Eyeglasses"])
  n = size * size * 3
  windows = np.lib.stride_tricks.sliding_window_view(bank, n, axis=1)
  row = np.minimum((col("noise_row") * _NOISE_ROWS).astype(np.intp), _NOISE_ROWS - 1)
  start = np.minimum((col("noise_offset") * n).astype(np.intp), n - 1)
  noise = windows[row, start].reshape(batch, 3, size, size)
  # Row of each pixel's colour in the palette flattened over (image, layer).
  flat_ids = np.add(ids, (np.arange(batch, dtype=np.intp) * _NUM_LAYERS)[:, None, None],
                    dtype=np.intp)
  # One gather of RGBA-packed colours, then channel by channel in 16-bit fixed
  # point (gain in 1/128ths: 255 * 2 * 128 < 2**16) on [B, H, W] planes: gathering
  # 3-byte pixels, broadcasting a gain over a trailing axis of 3, or float32
  # arithmetic all measured slower.
  colours = np.take(palette.reshape(-1), flat_ids).view(np.uint8)  # [B, H, W * 4]
  colours = colours.reshape(batch, size, size, 4)
  gain_fixed = (gain * f32(128.0)).astype(np.uint16)
  plane = np.empty((batch, size, size), np.uint16)
  signed = plane.view(np.int16)
  for c in range(3):
    np.multiply(colours[..., c], gain_fixed, out=plane)
    np.right_shift(plane, 7, out=plane)
    np.add(signed, noise[:, c], out=signed)
    np.clip(signed, 0, 255, out=signed)
    np.copyto(images[..., c], signed, casting="unsafe")

  # ---- regions: where each attribute's evidence is, or would be ----
  np.copyto(region("Bald"), hair)
  np.logical_or(region("Bald", top_rows), highlight, out=region("Bald", top_rows))
  np.copyto(region("Bangs"), bangs)
  hair_region = hair | (bangs & flag["Bangs"])
  for name in ("Black_Hair", "Blond_Hair", "Brown_Hair"):
    np.copyto(region(name), hair_region)
  np.logical_or(disc, sides, out=region("Eyeglasses", eye_rows))
  # Eye shadow not under the eye (the whole patch in the rare tiny images where the
  # eye covers it), and the lips, whose colour makeup deepens.
  covered = ~(shadow & ~sclera).any(axis=(1, 2))
  np.logical_and(shadow, ~sclera | _b(covered), out=region("Heavy_Makeup", eye_rows))
  makeup_low = region("Heavy_Makeup", low_rows)
  np.logical_or(makeup_low, lips, out=makeup_low)
  np.copyto(region("Mouth_Slightly_Open", low_rows), mouth_open)
  np.copyto(region("Mustache", low_rows), mustache)
  np.copyto(region("Pale_Skin"), face)
  pale_top = region("Pale_Skin", top_rows)
  np.logical_and(pale_top, ~(hat & hat_on), out=pale_top)
  np.copyto(region("Rosy_Cheeks", low_rows), cheeks)
  np.logical_or(mouth, mouth_other_smile, out=region("Smiling", low_rows))
  np.copyto(region("Wearing_Hat", top_rows), hat)
  np.copyto(region("Wearing_Lipstick", low_rows), lips)


def _palette(has: dict[str, np.ndarray], col) -> np.ndarray:
  """Per-image colours of every layer; ``uint8 [batch, _NUM_LAYERS, 3]``."""
  f32 = np.float32
  batch = len(has["Bald"])
  jitter = lambda *names: np.stack([col(n) for n in names], axis=1) - f32(0.5)  # [B, 3]
  skin_jitter = f32(20.0) * jitter("skin_r", "skin_g", "skin_b")
  tone = col("skin_tone")[:, None]
  tan = _SKIN_LIGHT + tone * (_SKIN_DARK - _SKIN_LIGHT)
  skin = np.where(has["Pale_Skin"][:, None], _PALE_SKIN, tan) + skin_jitter

  # Hair: the labelled colour, else grey or auburn ("other": no hair-colour label).
  hair = _pick(_OTHER_HAIR, col("other_hair"))
  # Brown first and black last: black wins where several are set.
  for colour, name in zip(_HAIR_COLOURS[::-1], ("Brown_Hair", "Blond_Hair", "Black_Hair")):
    hair = np.where(has[name][:, None], colour, hair)
  hair = hair * (f32(0.85) + f32(0.3) * col("hair_brightness"))[:, None]

  lipstick = _pick(_LIPSTICKS, col("lipstick_colour"))
  natural = f32(0.6) * skin + f32(0.4) * _NATURAL_LIP
  hat = f32(30.0) + f32(200.0) * np.stack([col("hat_r"), col("hat_g"), col("hat_b")], axis=1)

  layers = np.empty((batch, _NUM_LAYERS, 3), np.float32)
  layers[:, _BG] = f32(40.0) + f32(180.0) * (jitter("bg_r", "bg_g", "bg_b") + f32(0.5))
  layers[:, _HAIR] = hair
  layers[:, _BANGS] = hair
  layers[:, _SKIN] = skin
  layers[:, _HIGHLIGHT] = skin + f32(0.55) * (f32(255.0) - skin)
  layers[:, _BROW] = _BROW_COLOUR * (f32(0.7) + f32(0.6) * col("brow"))[:, None]
  layers[:, _SHADOW] = f32(0.8) * _pick(_SHADOWS, col("shadow_colour")) + f32(0.2) * skin
  layers[:, _SCLERA] = _SCLERA_COLOUR
  layers[:, _IRIS] = _pick(_IRISES, col("iris_colour"))
  layers[:, _NOSE] = f32(0.82) * skin
  # Nearly pure pink: half-and-half with the skin was too faint for any model to learn
  # at 32×32 (docs/training.md).
  layers[:, _CHEEK] = f32(0.1) * skin + f32(0.9) * _CHEEK_PINK
  lips = np.where(has["Wearing_Lipstick"][:, None], lipstick, natural)
  # Heavy makeup also deepens the lips (CelebA's makeup and lipstick share the
  # mouth): evidence that stays visible where glasses hide the eye shadow.
  layers[:, _LIPS] = np.where(has["Heavy_Makeup"][:, None],
                              f32(0.5) * lips + f32(0.5) * _DEEP_LIP, lips)
  layers[:, _OPENING] = _OPENING_COLOUR
  layers[:, _MUSTACHE] = _MUSTACHE_COLOUR * (
      f32(0.7) + f32(0.6) * col("mustache_shade"))[:, None]
  layers[:, _FRAME] = _pick(_FRAMES, col("frame_colour"))
  layers[:, _HAT] = hat
  layers[:, _BRIM] = f32(0.75) * hat
  return np.clip(layers, 0.0, 255.0).astype(np.uint8)


def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise DataError(f"SyntheticFaces: expected {name} to be an int >= {minimum}, "
                    f"got {value!r} of type {type(value).__name__}")
  if value < minimum:
    raise DataError(f"SyntheticFaces: expected {name} >= {minimum}, got {value}")
  return int(value)


class SyntheticFaces:
  """Generated face-like images with 14 binary attributes and their regions.

  A random-access source (:mod:`hpjax.data.base`): ``src[i]`` and
  ``src.get_batch(indices)`` return

  * ``"image"``: ``uint8 [image_size, image_size, 3]``,
  * ``"label"``: ``int32 [14]`` in {0, 1}, ordered as :data:`ATTRIBUTES`,
  * ``"regions"``: ``bool [14, image_size, image_size]``, where each attribute's
    evidence is (or would be, when absent),

  with a leading batch axis for ``get_batch``. Example ``i`` depends only on
  ``(seed, split, i)`` and ``image_size``.

  >>> src = SyntheticFaces("val", image_size=32, num_examples=10)
  >>> batch = src.get_batch([3, 1])
  >>> batch["image"].shape, batch["label"].shape, batch["regions"].shape
  ((2, 32, 32, 3), (2, 14), (2, 14, 32, 32))
  >>> bool((batch["image"][1] == src[1]["image"]).all())
  True

  Args:
    split: ``"train"``, ``"val"`` or ``"test"``; splits hash differently and share
      no images.
    image_size: height and width in pixels, ``>= 16`` (32 to 64 is the intended
      range; at 16 px the smallest features shrink to single pixels).
    num_examples: number of examples; defaults to ``SPLIT_SIZES[split]``.
    seed: data set seed, ``0 <= seed < 2**63``.
  """

  def __init__(self, split: str = "train", *, image_size: int = 64,
               num_examples: int | None = None, seed: int = 0):
    if split not in _SPLIT_IDS:
      raise DataError(f"SyntheticFaces: expected split in {tuple(_SPLIT_IDS)}, got {split!r}")
    self.split = split
    self.image_size = _check_int("image_size", image_size, MIN_IMAGE_SIZE)
    if num_examples is None:
      num_examples = SPLIT_SIZES[split]
    self._num_examples = _check_int("num_examples", num_examples, 0)
    self.seed = _check_int("seed", seed, 0)
    if self.seed >= 2**63:
      raise DataError(f"SyntheticFaces: expected seed < 2**63, got {self.seed}")
    self.label_names: tuple[str, ...] = ATTRIBUTES
    self.image_shape: tuple[int, int, int] = (self.image_size, self.image_size, 3)
    self._bank = noise_bank(self.image_size)

  def __len__(self) -> int:
    return self._num_examples

  def __repr__(self) -> str:
    return (f"SyntheticFaces(split={self.split!r}, image_size={self.image_size}, "
            f"num_examples={self._num_examples}, seed={self.seed})")

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    """Example ``index`` (negative indices count from the end, as for a list)."""
    i = operator.index(index)
    if i < 0:
      i += self._num_examples
    if not 0 <= i < self._num_examples:
      raise IndexError(f"SyntheticFaces index {index} out of range for "
                       f"{self._num_examples} examples")
    return {k: v[0] for k, v in self.get_batch(np.array([i], np.int64)).items()}

  def _indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (idx.dtype.kind in "iu" or idx.size == 0):
      raise DataError(f"SyntheticFaces indices: expected a 1-D sequence of ints, "
                      f"got an array of shape {idx.shape} and dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= self._num_examples):
      bad = idx[(idx < 0) | (idx >= self._num_examples)][0]
      raise DataError(f"SyntheticFaces indices: expected values in "
                      f"[0, {self._num_examples}), got {bad}")
    return idx

  def latents(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """The labels and nuisance uniforms that determine each image.

    Args:
      indices: ``[batch]`` example indices in ``[0, len(self))``.

    Returns:
      ``{"label": int32 [batch, 14], "nuisance": float32 [batch, NUM_NUISANCE_FIELDS]}``.
      Edit ``"label"`` and pass the dict to :meth:`render` to draw the same face
      with a different attribute set.
    """
    idx = self._indices(indices)
    u = nuisance_uniforms(self.seed, _SPLIT_IDS[self.split], idx)
    return {"label": sample_labels(u), "nuisance": u}

  def render(self, latents: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Draws ``latents`` (from :meth:`latents`, possibly edited).

    Returns:
      ``{"image": uint8 [batch, H, W, 3], "label": int32 [batch, 14],
      "regions": bool [batch, 14, H, W]}``.
    """
    labels = np.asarray(latents["label"])
    u = np.asarray(latents["nuisance"])
    if labels.ndim != 2 or labels.shape[1] != len(ATTRIBUTES):
      raise DataError(f"SyntheticFaces.render: expected label of shape "
                      f"[batch, {len(ATTRIBUTES)}], got {labels.shape}")
    if u.shape != (len(labels), NUM_NUISANCE_FIELDS) or u.dtype != np.float32:
      raise DataError(f"SyntheticFaces.render: expected nuisance float32 "
                      f"[{len(labels)}, {NUM_NUISANCE_FIELDS}], got {u.dtype} {u.shape}")
    images, regions = render(labels, u, self._bank, self.image_size)
    return {"image": images, "label": labels.astype(np.int32), "regions": regions}

  def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Examples ``indices`` stacked on a leading batch axis (vectorised).

    Args:
      indices: ``[batch]`` ints in ``[0, len(self))``; any order, repeats allowed.

    Returns:
      ``{"image": uint8 [batch, H, W, 3], "label": int32 [batch, 14],
      "regions": bool [batch, 14, H, W]}``.

    Raises:
      DataError: indices are not a 1-D integer sequence or are out of range.
    """
    return self.render(self.latents(indices))
