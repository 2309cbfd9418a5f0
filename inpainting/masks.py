"""Hole masks: which pixels the model must generate (1) and which it is given (0).

Masks are numpy float32, [H, W, 1] for one image or [B, H, W, 1] for a batch, so they
broadcast against [.., H, W, 3] images. Kinds:

  center       the centre half of each side (pixels 16:48 x 16:48 for 64x64); the default
  random_box   one random rectangle per image, each side 1/4 to 3/4 of the image side
  full         everything unknown: pure text-to-image
  outpaint     the inverse of `center`: the centre is known, the border is generated
  box:x,y,w,h  an explicit rectangle (x = column, y = row), used by the inpaint command

Batched construction is vectorised (one comparison per axis, then a broadcast), because it
runs once per training batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

KINDS = ("center", "random_box", "full", "outpaint", "box")


@dataclasses.dataclass(frozen=True)
class MaskSpec:
  """A parsed mask description.

  Attributes:
    kind: one of `KINDS`.
    box: (x, y, w, h) for kind "box"; None otherwise.
  """

  kind: str
  box: tuple[int, int, int, int] | None = None

  @property
  def is_random(self) -> bool:
    """Whether `make` needs a random generator for this spec."""
    return self.kind == "random_box"


def parse(spec: str | MaskSpec) -> MaskSpec:
  """Parses "center", "random_box", "full", "outpaint" or "box:x,y,w,h".

  Raises:
    ValueError: (one line) for anything else, or a box with a negative corner or an
      empty side.
  """
  if isinstance(spec, MaskSpec):
    return spec
  text = str(spec).strip()
  if text in ("center", "random_box", "full", "outpaint"):
    return MaskSpec(text)
  if text.startswith("box:"):
    parts = text[len("box:") :].split(",")
    try:
      x, y, w, h = (int(p) for p in parts)
    except ValueError:
      raise ValueError(f"bad mask {spec!r}: a box is box:x,y,w,h with four integers") from None
    if x < 0 or y < 0 or w <= 0 or h <= 0:
      raise ValueError(f"bad mask {spec!r}: x and y must be >= 0, w and h > 0")
    return MaskSpec("box", (x, y, w, h))
  raise ValueError(
    f"unknown mask {spec!r}; choose one of center, random_box, full, outpaint, box:x,y,w,h"
  )


def center_box(height: int, width: int) -> tuple[int, int, int, int]:
  """The centre rectangle (x, y, w, h): half of each side, e.g. 16,16,32,32 for 64x64."""
  return width // 4, height // 4, width // 2, height // 2


def _boxes_to_masks(
  x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray, height: int, width: int
) -> np.ndarray:
  """[B] box corners and sizes -> float32 [B, H, W, 1], 1 inside each box."""
  rows = np.arange(height)
  cols = np.arange(width)
  in_rows = (rows >= y[:, None]) & (rows < (y + h)[:, None])  # [B, H]
  in_cols = (cols >= x[:, None]) & (cols < (x + w)[:, None])  # [B, W]
  inside = in_rows[:, :, None] & in_cols[:, None, :]
  return inside[..., None].astype(np.float32)


def boxes_from_uniforms(
  uniforms: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """[B, 4] uniforms in [0, 1) -> rectangles (x, y, w, h arrays), sides 1/4..3/4 of the
  image side, top-left corner uniform such that the box stays inside the image."""
  u = np.asarray(uniforms, np.float64)
  h = height // 4 + (u[:, 0] * (height // 2 + 1)).astype(np.int64)
  w = width // 4 + (u[:, 1] * (width // 2 + 1)).astype(np.int64)
  y = (u[:, 2] * (height - h + 1)).astype(np.int64)
  x = (u[:, 3] * (width - w + 1)).astype(np.int64)
  return x, y, w, h


def random_boxes(
  rng: np.random.Generator, batch_size: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Draws `batch_size` rectangles (x, y, w, h arrays); see `boxes_from_uniforms`."""
  return boxes_from_uniforms(rng.random((batch_size, 4)), height, width)


def make_batch(
  spec: str | MaskSpec,
  batch_size: int,
  height: int = 64,
  width: int = 64,
  rng: np.random.Generator | None = None,
  uniforms: np.ndarray | None = None,
) -> np.ndarray:
  """Builds a batch of masks.

  Args:
    spec: a mask description accepted by `parse`.
    batch_size: number of masks B.
    height, width: image size.
    rng: for "random_box" (or give `uniforms`); ignored otherwise.
    uniforms: [B, 4] values in [0, 1) that place the random boxes (deterministic per
      example, as the input pipeline needs); used instead of `rng` when given.

  Returns:
    float32 [B, H, W, 1], 1 = hole (unknown), 0 = known.
  """
  spec = parse(spec)
  shape = (batch_size, height, width, 1)
  if spec.kind == "full":
    return np.ones(shape, np.float32)
  if spec.kind == "random_box":
    if uniforms is not None:
      boxes = boxes_from_uniforms(uniforms, height, width)
    elif rng is not None:
      boxes = random_boxes(rng, batch_size, height, width)
    else:
      raise ValueError("mask random_box needs a random generator")
    return _boxes_to_masks(*boxes, height, width)
  if spec.kind == "box":
    x, y, w, h = spec.box
    if x + w > width or y + h > height:
      raise ValueError(f"mask box:{x},{y},{w},{h} does not fit in a {width}x{height} image")
  else:
    x, y, w, h = center_box(height, width)
  one = np.zeros((height, width, 1), np.float32)
  one[y : y + h, x : x + w] = 1.0
  if spec.kind == "outpaint":
    one = 1.0 - one
  return np.broadcast_to(one, shape).copy()


def make(
  spec: str | MaskSpec,
  height: int = 64,
  width: int = 64,
  rng: np.random.Generator | None = None,
) -> np.ndarray:
  """One mask, float32 [H, W, 1]; see `make_batch`."""
  return make_batch(spec, 1, height, width, rng)[0]
