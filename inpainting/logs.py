"""What a run reports: TensorBoard events and console progress lines.

Only process 0 writes TensorBoard files and PNGs; every process logs its own errors.
TensorBoard files are written with tensorboardX, which needs no TensorFlow.
"""

from __future__ import annotations

import logging as logging_std
import os
import time
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from absl import logging


class Writer:
  """TensorBoard scalars and images of a run (WORKDIR/tensorboard), from process 0 only."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self._tb = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # noqa: PLC0415

      self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"), flush_secs=30)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if self._tb is None:
      return
    for name, value in values.items():
      self._tb.add_scalar(name, float(value), global_step=step)

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if self._tb is not None:
      self._tb.add_image(name, image, global_step=step, dataformats="HWC")

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
    self._data_wait = 0.0

  def add_data_wait(self, seconds: float) -> None:
    """Counts time the loop spent blocked on the input pipeline."""
    self._data_wait += seconds

  def update(self, step: int) -> dict[str, float]:
    """Timing scalars since the previous update: step time, images/s, data-wait share.

    `data_wait_fraction` near 0 means the input pipeline keeps up with the step; near 1,
    the step waits for data.
    """
    now = time.perf_counter()
    steps = max(step - self._last_step, 1)
    elapsed = max(now - self._last_time, 1e-9)
    step_time = elapsed / steps
    wait = self._data_wait
    self._last_step, self._last_time, self._data_wait = step, now, 0.0
    return {
      "perf/step_time_s": step_time,
      "perf/images_per_second": self.global_batch_size / step_time,
      "perf/data_wait_fraction": min(wait / elapsed, 1.0),
    }

  def line(
    self,
    step: int,
    perf: Mapping[str, float],
    metrics: Mapping[str, float],
    names: Sequence[str],
  ) -> str:
    """step | img/s | ETA | the named metrics (the rest are in TensorBoard)."""
    eta = (self.total_steps - step) * perf["perf/step_time_s"]
    shown = compact({k: metrics[k] for k in names if k in metrics})
    return (
      f"step {step}/{self.total_steps} | {perf['perf/images_per_second']:.1f} img/s | "
      f"data wait {perf.get('perf/data_wait_fraction', 0.0):.0%} | ETA {_duration(eta)} | {shown}"
    )


def compact(values: Mapping[str, float]) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in values.items())


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class _QuietLibraries(logging_std.Filter):
  """Drops INFO chatter of orbax and grain (their warnings and errors still show), JAX's
  note that it found no TPU (which greets every CPU or GPU user), orbax's note that a
  checkpoint folder opened for reading is read-only, and its warning that the data
  iterator's state was not restored (evaluation and inference restore the model only)."""

  _EXPECTED = (
    "Unable to initialize backend",
    "directory is read only",
    'Item "data" was found in the checkpoint, but could not be restored',
  )

  def filter(self, record: logging_std.LogRecord) -> bool:
    try:
      message = record.getMessage()
    except (TypeError, ValueError):  # Arguments that do not fit the format: the raw text.
      message = str(record.msg)
    if any(expected in message for expected in self._EXPECTED):
      return False
    noisy = "/orbax/" in record.pathname or "/grain/" in record.pathname
    return record.levelno >= logging_std.WARNING or not noisy


def quiet_libraries() -> None:
  quiet = _QuietLibraries()
  logging.get_absl_handler().addFilter(quiet)
  logging_std.getLogger("jax._src.xla_bridge").addFilter(quiet)


def console(line: str) -> None:
  """One plain line on stdout from process 0 (time, then the message); no log header."""
  if jax.process_index() == 0:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
