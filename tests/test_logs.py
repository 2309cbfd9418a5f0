"""The loop's timing scalars (inpainting/logs.py)."""

import time

import pytest

from inpainting import logs


def test_data_wait_fraction_counts_only_the_pipeline_wait():
  progress = logs.Progress(total_steps=10, global_batch_size=8, first_step=0)
  time.sleep(0.05)  # Step work: not data wait.
  progress.add_data_wait(0.05)  # As if the loop had blocked 50 ms on next(iterator).
  time.sleep(0.05)
  perf = progress.update(step=2)
  # 50 ms of about 100 ms elapsed.
  assert perf["perf/data_wait_fraction"] == pytest.approx(0.5, abs=0.2)
  assert perf["perf/images_per_second"] == pytest.approx(8 / perf["perf/step_time_s"])
  # The count starts again after each update.
  time.sleep(0.02)
  assert progress.update(step=3)["perf/data_wait_fraction"] == 0.0
  assert "data wait" in progress.line(3, perf, {}, ())


def test_quiet_libraries_drop_expected_notes_and_keep_other_warnings():
  import logging as logging_std  # noqa: PLC0415

  quiet = logs._QuietLibraries()

  def record(message, level=logging_std.WARNING, path="/x/orbax/checkpoint/y.py", args=()):
    return logging_std.LogRecord("absl", level, path, 1, message, args, None)

  assert not quiet.filter(
    record(
      'Item "%s" was found in the checkpoint, but could not be restored. Please provide a `CheckpointHandlerRegistry`',
      args=("data",),
    )
  )
  assert not quiet.filter(record("orbax progress", level=logging_std.INFO))
  assert quiet.filter(record('Item "state" was lost'))  # Other orbax warnings still show.
  assert quiet.filter(record("our own note", level=logging_std.INFO, path="/x/inpainting/z.py"))
