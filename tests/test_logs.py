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
