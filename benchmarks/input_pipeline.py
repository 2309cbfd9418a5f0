"""Examples/s of the full training input pipeline on the project's synthetic scenes.

  python benchmarks/input_pipeline.py [--num_records=20000] [--batch=64] [--windows=5]
  python benchmarks/input_pipeline.py --text_source=dialogue   # conversations as text

Prepares `num_records` synthetic scenes with `data_prep` exactly as README command 1 does
(the current record format: scene, 5 captions, context caption, 3-turn dialogue) into a
temporary folder (not timed; or reuses --data_dir). `--fixture=random` writes the lighter
fixture of earlier figures instead (random pixels, short captions, no conversation). Then
it times the training pipeline exactly
as the trainer builds it (shard, shuffle, decode, caption pick, batch, flip, scale, mask,
tokenize, prefetch) after a warm-up. Prints examples/s per window, the median, and a final
JSON line. On a shared host wall-clock rates swing widely, so each window also reports
examples per CPU-second of this process and how busy the rest of the host was.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from array_record.python.array_record_module import ArrayRecordWriter

# Run as a script from anywhere: make the repo root (for `configs`) importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import common  # noqa: E402
from inpainting import input_pipeline, records, tokenizer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_records", 20_000, "Training records in the generated fixture.")
flags.DEFINE_integer("num_shards", 4, "ArrayRecord shards of the generated fixture.")
flags.DEFINE_string("data_dir", "", "Existing prepared dataset to read instead; '' = generate.")
flags.DEFINE_integer("batch", 64, "Per-process batch size.")
flags.DEFINE_integer("warmup", 100, "Untimed batches first.")
flags.DEFINE_integer("windows", 5, "Timed windows; the median is reported.")
flags.DEFINE_integer("window_batches", 600, "Batches per timed window.")
flags.DEFINE_string("mask", "center", "data.mask")
flags.DEFINE_bool("random_flip", False, "data.random_flip (off in the default config)")
flags.DEFINE_integer("prefetch_batches", 4, "data.prefetch_batches")
flags.DEFINE_integer("num_workers", 0, "data.num_workers")
flags.DEFINE_enum(
  "fixture", "synthetic", ["synthetic", "random"], "Generated records: real scenes or random."
)
flags.DEFINE_string("text_source", "caption", "data.text_source (e.g. dialogue, turns)")

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "grey"]
SHAPES = ["circle", "square", "star", "triangle", "heart", "cross", "ring", "diamond"]
PLACES = ["in the middle", "near the top", "at the bottom left", "on the right"]


CORES = os.cpu_count() or 1


def host_cpu() -> tuple[float, float]:
  """(busy, total) CPU jiffies of the whole host since boot, from /proc/stat (Linux)."""
  try:
    with open("/proc/stat") as f:
      values = [float(v) for v in f.readline().split()[1:]]
  except OSError:
    return 0.0, 1.0
  idle = values[3] + values[4]  # idle + iowait
  return sum(values) - idle, sum(values)


def write_fixture(data_dir: str, num_records: int, num_shards: int) -> None:
  """Random uint8 images, 2-5 template captions and a small scene dict per record."""
  rng = np.random.default_rng(0)
  captions_seen = []
  per_shard = -(-num_records // num_shards)
  for shard in range(num_shards):
    path = os.path.join(data_dir, records.shard_name("train", shard, num_shards))
    writer = ArrayRecordWriter(path, "group_size:1")
    for i in range(shard * per_shard, min(num_records, (shard + 1) * per_shard)):
      colour, shape, place, back = (
        rng.choice(COLOURS),
        rng.choice(SHAPES),
        rng.choice(PLACES),
        rng.choice(COLOURS),
      )
      templates = [
        f"a {colour} {shape} {place} on a {back} background",
        f"{colour} {shape}, {back} background",
        f"there is a {shape} {place}; it is {colour}",
        f"a {back} picture with a {colour} {shape}",
        f"{shape}",
      ]
      captions = templates[: int(rng.integers(2, 6))]
      scene = {
        "background": back,
        "objects": [{"shape": shape, "colour": colour, "x": int(rng.integers(64))}],
      }
      image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
      writer.write(records.encode(records.Example(f"bench-{i:06d}", image, captions, scene)))
      if i < 2000:
        captions_seen.extend(captions)
    writer.close()
  tokenizer.train(captions_seen, os.path.join(data_dir, records.TOKENIZER_FILE), vocab_size=128)
  with open(os.path.join(data_dir, records.METADATA_FILE), "w") as f:
    json.dump({"source": "benchmark", "counts": {"train": num_records}}, f)


def main(argv):
  del argv
  temp_dir = None
  data_dir = FLAGS.data_dir
  if not data_dir:
    temp_dir = data_dir = tempfile.mkdtemp(prefix="inpainting_bench_")
    start = time.perf_counter()
    if FLAGS.fixture == "synthetic":
      from data_prep import core  # noqa: PLC0415  (the benchmark's fixture, not timed)

      core.prepare(
        "synthetic",
        "",
        data_dir,
        num_train=FLAGS.num_records,
        num_validation=64,
        num_shards=FLAGS.num_shards,
        overwrite=True,
      )
    else:
      write_fixture(data_dir, FLAGS.num_records, FLAGS.num_shards)
    print(
      f"wrote {FLAGS.num_records} {FLAGS.fixture} records in {time.perf_counter() - start:.1f}s"
    )
  try:
    config = common.base().data
    config.mask = FLAGS.mask
    config.random_flip = FLAGS.random_flip
    config.prefetch_batches = FLAGS.prefetch_batches
    config.num_workers = FLAGS.num_workers
    config.text_source = FLAGS.text_source
    iterator = input_pipeline.make_train_iterator(data_dir, config, FLAGS.batch, seed=0)
    for _ in range(FLAGS.warmup):
      next(iterator)
    # Per CPU-second and the other processes' share of the host are only meaningful when
    # everything runs in this process (num_workers=0): the host is shared.
    in_process = FLAGS.num_workers == 0
    rates, cpu_rates, others = [], [], []
    for window in range(FLAGS.windows):
      examples = FLAGS.window_batches * FLAGS.batch
      start, cpu_start, host_start = time.perf_counter(), time.process_time(), host_cpu()
      for _ in range(FLAGS.window_batches):
        next(iterator)
      wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
      host_busy, host_total = (b - a for a, b in zip(host_start, host_cpu()))
      rates.append(examples / wall)
      cpu_rates.append(examples / cpu)
      others.append(max(0.0, host_busy / host_total - cpu / wall / CORES))
      line = f"window {window}: {rates[-1]:,.0f} examples/s"
      if in_process:
        line += f", {cpu_rates[-1]:,.0f} per CPU-second, others used {others[-1]:.0%} of the host"
      print(line)
    median = statistics.median(rates)
    print(f"median: {median:,.0f} examples/s")
    if hasattr(iterator, "close"):
      iterator.close()
    print(
      json.dumps(
        {
          "examples_per_s": round(median),
          "windows": [round(r) for r in rates],
          "examples_per_cpu_s": round(statistics.median(cpu_rates)) if in_process else None,
          "other_load": round(statistics.median(others), 2) if in_process else None,
          "batch": FLAGS.batch,
          "batches_timed": FLAGS.windows * FLAGS.window_batches,
          "num_records": FLAGS.num_records if temp_dir else None,
          "fixture": FLAGS.fixture if temp_dir else FLAGS.data_dir,
          "text_source": FLAGS.text_source,
          "mask": FLAGS.mask,
          "random_flip": FLAGS.random_flip,
          "prefetch_batches": FLAGS.prefetch_batches,
          "num_workers": FLAGS.num_workers,
          "cpu_count": os.cpu_count(),
        }
      )
    )
  finally:
    if temp_dir:
      shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
