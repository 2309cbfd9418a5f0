"""The only image I/O: decode, centre-crop, resize, grey check and [-1, 1] normalisation.

`data_prep` (offline conversion), `inpaint` (a user's photo), the demo's uploads and the
compliance renderer all go through here, so a photo is prepared the same way everywhere:
centre crop to a square, then PIL's Lanczos (antialiased) resize to 64x64.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

SIZE = 64  # Side of every image the models see.
RESIZE_NOTE = "centre crop to a square, then PIL Lanczos (antialiased) resize to 64x64"
# Decoding more pixels than this is refused before the pixels are read (decompression bombs).
MAX_PIXELS = 40_000_000
# PIL modes without colour; RGB images whose channels differ by at most this are grey too.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_GRAY_TOLERANCE = 3

GRAYSCALE = "grayscale"
CORRUPT_IMAGE = "corrupt_image"
TOO_LARGE = "image_too_large"


class ImageError(ValueError):
  """An input image that cannot be used; `reason` is one of the constants above."""

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    self.reason = reason


def load(source: str | bytes | os.PathLike, grayscale: str = "convert") -> np.ndarray:
  """Decodes an image file (path or bytes) fully to uint8 [64, 64, 3].

  Other sizes are centre-cropped to a square and resized with PIL's Lanczos filter; big
  JPEGs are first decoded at a reduced scale (`Image.draft`) to at least twice the target
  size. The pixel count is checked from the header, before any pixel is decoded.

  Args:
    source: a file path or the file's bytes.
    grayscale: "convert" (grey images become grey RGB) or "skip" (grey images, including
      RGB files without colour, raise ImageError(GRAYSCALE)).

  Raises:
    ImageError: grayscale (when skipping), too many pixels, undecodable or truncated data.
  """
  name = "<upload>" if isinstance(source, bytes) else os.fspath(source)
  opened = io.BytesIO(source) if isinstance(source, bytes) else source
  try:
    with Image.open(opened) as image:
      width, height = image.size
      if width * height > MAX_PIXELS:
        raise ImageError(TOO_LARGE, f"{name} ({width}x{height} pixels, limit {MAX_PIXELS:,})")
      if image.mode in _GRAY_MODES and grayscale == "skip":
        raise ImageError(GRAYSCALE, f"{name} (mode {image.mode})")
      if image.format == "JPEG" and min(image.size) > 2 * SIZE:
        image.draft("RGB", (2 * SIZE, 2 * SIZE))
      image.load()  # Forces the full decode: truncated files fail here.
      if image.mode != "RGB":
        image = image.convert("RGB")
      pixels = _centre_resize(image)
  except ImageError:
    raise
  except Exception as error:  # Any decoder failure means a bad file, never a crash.
    raise ImageError(CORRUPT_IMAGE, f"{name} ({type(error).__name__}: {error})") from None
  if grayscale == "skip" and is_colourless(pixels):
    raise ImageError(GRAYSCALE, f"{name} (RGB without colour)")
  return pixels


def _centre_resize(image: Image.Image) -> np.ndarray:
  width, height = image.size
  if (width, height) != (SIZE, SIZE):
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    image = image.resize((SIZE, SIZE), Image.Resampling.LANCZOS, box=box)
  # tobytes + frombuffer: one copy, no per-pixel work.
  return np.frombuffer(image.tobytes(), np.uint8).reshape(SIZE, SIZE, 3).copy()


def is_colourless(pixels: np.ndarray) -> bool:
  """Whether an RGB uint8 image is grey (every other pixel in each direction is plenty)."""
  sample = pixels[::2, ::2].astype(np.int16)
  spread = max(
    np.abs(sample[..., 0] - sample[..., 1]).max(),
    np.abs(sample[..., 1] - sample[..., 2]).max(),
  )
  return bool(spread <= _GRAY_TOLERANCE)


def to_float(pixels: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [-1, 1]; (x - 127.5) / 127.5 maps 0 -> -1 and 255 -> 1 exactly."""
  image = np.asarray(pixels).astype(np.float32)
  image -= 127.5
  image /= 127.5
  return image


def to_uint8(images) -> np.ndarray:
  """[-1, 1] floats -> uint8 pixels (rounded, clipped)."""
  images = np.asarray(images, np.float32)
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes atomically: a half-written PNG never appears under `path`."""
  tmp = path + ".tmp"
  Image.fromarray(image).save(tmp, format="PNG")
  os.replace(tmp, path)
