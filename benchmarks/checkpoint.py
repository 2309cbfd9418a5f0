"""What periodic async orbax saves cost the training loop.

  python benchmarks/checkpoint.py --config=configs/vaegan.py [--batch=64] [--every=100]

Runs the trainer's compiled step and its `Checkpointer` (inpainting/checkpointing.py) on a
random batch. Measures the median step without saving, then for each of `--saves` saves:
the time `save()` blocks the loop (device-to-host copy, then the write goes to a background
thread) plus the extra time of the steps that run while the write is still in flight (it
competes for the same CPU cores). The overhead of saving every `--every` steps is that
cost divided by `every` step times. Also prints a blocking (synchronous) save for
comparison. Last line: JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

import jax
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step as bench_step  # noqa: E402  (sibling benchmark script)

from inpainting import checkpointing  # noqa: E402

# --config, --batch, --steps (baseline steps) and --warmup come from train_step.py.
FLAGS = flags.FLAGS
flags.DEFINE_integer("every", 100, "Save interval in steps whose overhead is reported.")
flags.DEFINE_integer("saves", 3, "Async saves measured.")
flags.DEFINE_string("dir", None, "Checkpoint folder (default: a temporary one).")


def _folder_bytes(path: str) -> int:
  return sum(
    os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
  )


def measure(config, directory: str) -> dict:
  compiled = bench_step.compile_step(config, FLAGS.batch, FLAGS.vocab_size)
  baseline = statistics.median(bench_step.time_steps(compiled, FLAGS.steps, FLAGS.warmup))
  data = checkpointing.DataIteratorState(iterator=None)
  data.state = {"note": "benchmark: no data iterator"}
  checkpointer = checkpointing.Checkpointer(directory, save_every_steps=FLAGS.every, keep=2)
  step = 0
  per_save = []
  for _ in range(FLAGS.saves):
    step += FLAGS.every
    start = time.perf_counter()
    checkpointer.save(step, compiled.state, data, force=True)
    blocked = time.perf_counter() - start
    overlapped = []
    while checkpointer.saving():
      overlapped.append(bench_step.run_step(compiled, step))
    after = [
      bench_step.run_step(compiled, step) for _ in range(2)
    ]  # Steps after the write, for reference.
    extra = sum(max(0.0, t - baseline) for t in overlapped)
    per_save.append(
      {
        "blocked_seconds": blocked,
        "steps_during_write": len(overlapped),
        "extra_seconds_of_those_steps": extra,
        "median_step_after_write": statistics.median(after),
        "overhead_seconds": blocked + extra,
      }
    )
  checkpointer.wait()
  size = _folder_bytes(os.path.join(directory, str(step)))
  start = time.perf_counter()
  checkpointer.save(step + FLAGS.every, compiled.state, data, force=True)
  checkpointer.wait()
  blocking_save = time.perf_counter() - start
  checkpointer.close()

  overhead = statistics.median(s["overhead_seconds"] for s in per_save)
  return {
    "config": config.model.name,
    "device_kind": jax.devices()[0].device_kind,
    "batch": FLAGS.batch,
    "checkpoint_mib": size / 2**20,
    "median_step_seconds": baseline,
    "save_every_steps": FLAGS.every,
    "median_async_overhead_seconds": overhead,
    "overhead_fraction": overhead / (FLAGS.every * baseline),
    "synchronous_save_seconds": blocking_save,
    "saves": per_save,
  }


def main(argv):
  del argv
  if FLAGS.dir:
    result = measure(FLAGS.config, os.path.abspath(FLAGS.dir))
  else:
    with tempfile.TemporaryDirectory() as directory:
      result = measure(FLAGS.config, os.path.join(directory, "checkpoints"))
  print(
    f"{result['config']}: async save every {result['save_every_steps']} steps costs "
    f"{100 * result['overhead_fraction']:.2f}% of step time "
    f"({result['median_async_overhead_seconds'] * 1e3:.0f} ms per save, "
    f"{result['checkpoint_mib']:.0f} MiB; a synchronous save takes "
    f"{result['synchronous_save_seconds'] * 1e3:.0f} ms)"
  )
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
