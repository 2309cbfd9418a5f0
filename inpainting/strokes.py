"""Sketches as strokes: parsing, augmentation, rasterising to 64x64, and their captions.

`data_prep`'s quickdraw and sketchrnn sources turn drawings into records with this module;
it lives in `inpainting/` (numpy only, no JAX) so that a future sketch pad in the demo can
rasterise strokes exactly as the training data were.

A drawing is a list of strokes, each a float64 array [n, 2] of (x, y) points, y downwards
(QuickDraw's and sketch-rnn's convention, the same as image rows). Rendering:

  1. fit: the drawing's bounding box is scaled, keeping its aspect ratio, so that its longer
     side spans `size - 2 * margin - line_width` pixels, and centred in the image;
  2. draw: every segment between consecutive points (a one-point stroke is a dot) is a
     capsule of diameter `line_width`; a pixel's ink is its coverage by the nearest capsule,
     clip(line_width / 2 + 0.5 - distance, 0, 1), with distance from the pixel's centre
     (pixel (row r, column c) has its centre at x = c, y = r). This is the usual analytic
     anti-aliasing of a one-pixel box filter: a stroke through pixel centres with
     line_width 1 inks exactly that row of pixels, and a thicker or off-centre stroke gets
     graded edges;
  3. dark on white: value = round(255 * (1 - ink)), stored as grey RGB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SIZE = 64  # Output side in pixels.
LINE_WIDTH = 1.5  # Default stroke diameter in output pixels.
MARGIN = 2.0  # Default white border (pixels) around the fitted drawing.
QUICKDRAW_MAX = 255  # QuickDraw's simplified drawings lie in a 0..255 box.
STROKE3_MAX_OFFSET = 1000  # |dx|, |dy| above this are refused (sketch-rnn's own limit).
# Stroke augmentation (sketch-rnn's random_scale_factor is 0.15; a small rotation on top).
AUGMENT_SCALE = 0.15  # x and y each scaled by 1 + U(-s, s), independently.
AUGMENT_ROTATION = 10.0  # Degrees, U(-r, r).
# Captions: the first is the canonical one (explore and evaluation use it); training picks
# one per example per epoch.
CAPTION_TEMPLATES = (
  "a drawing of {a}",
  "a sketch of {a}",
  "a doodle of {a}",
  "{a}, drawn by hand",
  "a quick drawing of {a}",
)

# Why a drawing cannot be used (the converter maps these to its skip reasons).
MALFORMED = "malformed"
EMPTY = "empty"
OUT_OF_RANGE = "out_of_range"

Strokes = list[np.ndarray]


class StrokeError(ValueError):
  """An unusable drawing; `reason` is MALFORMED, EMPTY or OUT_OF_RANGE."""

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    self.reason = reason


# --- parsing --------------------------------------------------------------------------------


def _is_number(value) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool)


def from_quickdraw(drawing) -> Strokes:
  """QuickDraw's simplified `drawing` field: a list of strokes [[x...], [y...]] (a third
  list of timestamps, as in the raw format, is ignored), coordinates in 0..255.

  Raises:
    StrokeError: MALFORMED (not that structure, non-numbers, x and y of different
      lengths), EMPTY (no points at all), OUT_OF_RANGE (a coordinate outside 0..255 or
      not finite).
  """
  if not isinstance(drawing, list):
    raise StrokeError(MALFORMED, f"drawing is a {type(drawing).__name__}, not a list of strokes")
  strokes = []
  for i, stroke in enumerate(drawing):
    if not (isinstance(stroke, list) and len(stroke) in (2, 3)):
      raise StrokeError(MALFORMED, f"stroke {i} is not [[x...], [y...]]")
    xs, ys = stroke[0], stroke[1]
    if not (isinstance(xs, list) and isinstance(ys, list)) or len(xs) != len(ys):
      raise StrokeError(MALFORMED, f"stroke {i}: x and y are not lists of one length")
    if not all(_is_number(v) for v in xs) or not all(_is_number(v) for v in ys):
      raise StrokeError(MALFORMED, f"stroke {i}: a coordinate is not a number")
    if not xs:
      continue
    points = np.array([xs, ys], np.float64).T
    if not (np.isfinite(points).all() and points.min() >= 0 and points.max() <= QUICKDRAW_MAX):
      raise StrokeError(
        OUT_OF_RANGE,
        f"stroke {i}: coordinates {points.min():g}..{points.max():g} outside 0..{QUICKDRAW_MAX}",
      )
    strokes.append(points)
  if not strokes:
    raise StrokeError(EMPTY, "no points")
  return strokes


def from_stroke3(sequence) -> Strokes:
  """A sketch-rnn stroke-3 sequence [n, 3] of (dx, dy, pen_lifted): offsets from the
  previous point; pen_lifted = 1 ends the stroke at that point.

  Raises:
    StrokeError: MALFORMED (not a numeric [n, 3] array, pen state not 0/1), EMPTY (no
      points), OUT_OF_RANGE (an offset over STROKE3_MAX_OFFSET or not finite).
  """
  array = np.asarray(sequence) if isinstance(sequence, np.ndarray | list) else None
  if array is None or array.dtype.kind not in "iuf" or array.ndim != 2 or array.shape[1] != 3:
    shape = getattr(array, "shape", None)
    raise StrokeError(MALFORMED, f"not a numeric [n, 3] stroke-3 array (shape {shape})")
  if len(array) == 0:
    raise StrokeError(EMPTY, "no points")
  array = array.astype(np.float64)
  offsets, pen = array[:, :2], array[:, 2]
  if not np.isfinite(offsets).all() or np.abs(offsets).max() > STROKE3_MAX_OFFSET:
    raise StrokeError(OUT_OF_RANGE, f"an offset exceeds {STROKE3_MAX_OFFSET} or is not finite")
  if not np.isin(pen, (0, 1)).all():
    raise StrokeError(MALFORMED, "pen state not 0 or 1")
  points = np.cumsum(offsets, axis=0)
  ends = np.flatnonzero(pen == 1) + 1
  return [s for s in np.split(points, ends) if len(s)]


# --- augmentation and rendering ---------------------------------------------------------------


def augment(
  strokes: Strokes,
  rng: np.random.Generator,
  scale: float = AUGMENT_SCALE,
  rotation: float = AUGMENT_ROTATION,
) -> Strokes:
  """sketch-rnn's augmentation: x and y scaled independently by 1 + U(-scale, scale), then a
  rotation by U(-rotation, rotation) degrees (rendering re-fits the box afterwards)."""
  sx, sy = 1.0 + rng.uniform(-scale, scale, size=2)
  angle = math.radians(rng.uniform(-rotation, rotation))
  cos, sin = math.cos(angle), math.sin(angle)
  matrix = np.array([[sx * cos, -sy * sin], [sx * sin, sy * cos]])
  return [s @ matrix.T for s in strokes]


def fit(
  strokes: Strokes, size: int = SIZE, line_width: float = LINE_WIDTH, margin: float = MARGIN
) -> Strokes:
  """The strokes in pixel coordinates: bounding box scaled (aspect kept) to span
  size - 2 * margin - line_width along its longer side, centred."""
  points = np.concatenate(strokes)
  low, high = points.min(0), points.max(0)
  extent = float((high - low).max())
  span = size - 2 * margin - line_width
  scale = span / extent if extent > 0 else 1.0
  centre = (low + high) / 2
  return [(s - centre) * scale + (size - 1) / 2 for s in strokes]


def _segments(strokes: Strokes) -> tuple[np.ndarray, np.ndarray]:
  """(start points, end points) of every segment, [S, 2] each; a one-point stroke is a
  zero-length segment (a dot)."""
  starts, ends = [], []
  for s in strokes:
    if len(s) == 1:
      starts.append(s)
      ends.append(s)
    else:
      starts.append(s[:-1])
      ends.append(s[1:])
  return np.concatenate(starts), np.concatenate(ends)


def ink(strokes: Strokes, size: int = SIZE, line_width: float = LINE_WIDTH) -> np.ndarray:
  """Coverage in [0, 1], float32 [size, size], of strokes already in pixel coordinates.

  Each segment is measured only against the pixels of its padded bounding box: all
  (segment, pixel) pairs at once, then the maximum per pixel.
  """
  a, b = _segments(strokes)
  radius = line_width / 2 + 0.5  # Beyond this a pixel gets no ink from a segment.
  low = np.floor(np.minimum(a, b) - radius).clip(0, size - 1).astype(np.int64)
  high = np.ceil(np.maximum(a, b) + radius).clip(0, size - 1).astype(np.int64)
  outside = (np.minimum(a, b) - radius > size - 1).any(1) | (np.maximum(a, b) + radius < 0).any(1)
  extent = np.where(outside[:, None], 0, high - low + 1)  # (width, height) of each box
  counts = extent[:, 0] * extent[:, 1]
  segment = np.repeat(np.arange(len(a)), counts)
  offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
  width = extent[segment, 0]
  px = low[segment, 0] + offset % np.maximum(width, 1)
  py = low[segment, 1] + offset // np.maximum(width, 1)
  p = np.stack([px, py], -1).astype(np.float64)
  sa, d = a[segment], (b - a)[segment]
  length2 = (d**2).sum(-1)
  t = np.clip(((p - sa) * d).sum(-1) / np.where(length2 > 0, length2, 1.0), 0.0, 1.0)
  distance = np.sqrt(((p - sa - t[:, None] * d) ** 2).sum(-1))
  coverage = np.zeros(size * size)
  np.maximum.at(coverage, py * size + px, np.clip(radius - distance, 0.0, 1.0))
  return coverage.reshape(size, size).astype(np.float32)


def rasterize(
  strokes: Strokes,
  size: int = SIZE,
  line_width: float = LINE_WIDTH,
  margin: float = MARGIN,
  fit_box: bool = True,
) -> np.ndarray:
  """Dark-on-white anti-aliased rendering, uint8 [size, size, 3] (grey RGB).

  Args:
    strokes: points [n, 2] per stroke.
    size: output side in pixels.
    line_width: stroke diameter in output pixels.
    margin: white border around the fitted drawing.
    fit_box: fit the bounding box into the image (see `fit`); False draws the points as
      pixel coordinates (x = column, y = row, pixel centres at integers).
  """
  if fit_box:
    strokes = fit(strokes, size, line_width, margin)
  grey = np.round(255.0 * (1.0 - ink(strokes, size, line_width))).astype(np.uint8)
  return np.repeat(grey[..., None], 3, axis=-1)


def render(
  strokes: Strokes, line_width: float = LINE_WIDTH, augment_seed: Sequence[int] | None = None
) -> np.ndarray:
  """`rasterize` at 64x64, after `augment` with a generator seeded by `augment_seed` when
  given. A module-level function, so the converter's worker processes can run it."""
  if augment_seed is not None:
    strokes = augment(strokes, np.random.default_rng(list(augment_seed)))
  return rasterize(strokes, SIZE, line_width)


# --- captions -----------------------------------------------------------------------------------


def noun_phrase(word: str) -> str:
  """ "a cat", "an apple", "The Eiffel Tower" (names that start with "the" keep no article)."""
  word = " ".join(word.split())
  if word.lower().startswith("the "):
    return word
  return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def captions(word: str) -> list[str]:
  """The captions of a drawing of `word`, the canonical "a drawing of a {word}" first."""
  phrase = noun_phrase(word)
  return [template.format(a=phrase) for template in CAPTION_TEMPLATES]
