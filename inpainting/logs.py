"""What a run reports: TensorBoard events, console progress, PNG sample grids.

Only process 0 writes TensorBoard files and PNGs; every process logs its own errors.
TensorBoard files are written with tensorboardX, which needs no TensorFlow.
"""

from __future__ import annotations

import logging as logging_std
import time
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging

from inpainting import images as images_lib


def sample_grid(masked: np.ndarray, truth: np.ndarray, samples: np.ndarray, pad: int = 2):
  """One row per example: border | ground truth | K samples.

  Args:
    masked: [B, H, W, 3] input with the hole shown grey (floats in [-1, 1]).
    truth: [B, H, W, 3] ground truth.
    samples: [K, B, H, W, 3] completions.

  Returns:
    uint8 [rows, cols, 3] image.
  """
  columns = [masked, truth, *list(samples)]
  b, h, w, _ = truth.shape
  grid = np.full((b * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), 255, np.uint8)
  for col, images in enumerate(columns):
    pixels = images_lib.to_uint8(images)
    for row in range(b):
      y, x = pad + row * (h + pad), pad + col * (w + pad)
      grid[y : y + h, x : x + w] = pixels[row]
  return grid


class Writer:
  """TensorBoard scalars/images plus console lines, from process 0 only."""

  def __init__(self, logdir: str):
    self._tb = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # noqa: PLC0415

      self._tb = SummaryWriter(logdir=logdir, flush_secs=30)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if self._tb is None:
      return
    for name, value in values.items():
      self._tb.add_scalar(name, float(value), global_step=step)

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if self._tb is not None:
      self._tb.add_image(name, image, global_step=step, dataformats="HWC")

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class Progress:
  """Step rate, images/s and ETA, measured between calls to `update`."""

  def __init__(self, total_steps: int, global_batch_size: int, first_step: int):
    self.total_steps = total_steps
    self.global_batch_size = global_batch_size
    self._last_step = first_step
    self._last_time = time.perf_counter()

  def update(self, step: int) -> dict[str, float]:
    """Returns timing scalars since the previous update (step_time, images_per_second)."""
    now = time.perf_counter()
    steps = max(step - self._last_step, 1)
    step_time = (now - self._last_time) / steps
    self._last_step, self._last_time = step, now
    return {
      "perf/step_time_s": step_time,
      "perf/images_per_second": self.global_batch_size / step_time,
    }

  def line(self, step: int, perf: Mapping[str, float], metrics: Mapping[str, float]) -> str:
    eta = (self.total_steps - step) * perf["perf/step_time_s"]
    shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not k.startswith("perf/"))
    return (
      f"step {step}/{self.total_steps} | {perf['perf/images_per_second']:.1f} img/s | "
      f"ETA {_duration(eta)} | {shown}"
    )


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class _QuietLibraries(logging_std.Filter):
  """Drops INFO chatter of orbax and grain (their warnings and errors still show)."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    noisy = "/orbax/" in record.pathname or "/grain/" in record.pathname
    return record.levelno >= logging_std.WARNING or not noisy


def quiet_libraries() -> None:
  logging.get_absl_handler().addFilter(_QuietLibraries())


def console(line: str) -> None:
  if jax.process_index() == 0:
    logging.info("%s", line)
