"""Converter throughput on the course layout: 10k random 64x64 JPEGs, then data_prep.

  python benchmarks/prepare.py [--num_images=10000] [--runs=3] [--workers=0]

Builds train2014/ + val2014/ (90/10) and the caption pickle in a temporary folder (not
timed), then runs `data_prep.prepare` --source=ift6266 a few times. The last line printed
is a JSON object: the median conversion rate (decode + validate + write, as measured by the
converter's progress counter), the median end-to-end rate (listing, conversion, shards,
tokenizer training and metadata), and the CPU time per image over the whole run (this
process plus its workers), which says what the cores could do if nothing else ran on them.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep import prepare  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", 10_000, "JPEGs to generate (90 % train, 10 % val).")
flags.DEFINE_integer("runs", 3, "Timed conversions; the median is reported.")
flags.DEFINE_integer("workers", 0, "Converter processes; 0 = the converter's default.")

_WORDS = (
  "a",
  "red",
  "dog",
  "runs",
  "on",
  "the",
  "green",
  "grass",
  "near",
  "two",
  "people",
  "and",
  "blue",
  "car",
)


def _smooth_image(rng: np.random.Generator) -> Image.Image:
  """A photo-like (smooth, colourful) 64x64 image: upsampled 8x8 noise plus grain."""
  coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
  image = np.asarray(coarse.resize((64, 64), Image.Resampling.BICUBIC), np.int16)
  image = image + rng.integers(-12, 13, image.shape, dtype=np.int16)
  return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def build_course_layout(folder: str, num_images: int, seed: int = 0) -> None:
  """train2014/, val2014/ and the caption pickle of the IFT6266 archive."""
  rng = np.random.default_rng(seed)
  captions = {}
  for i in range(num_images):
    split = "val2014" if i % 10 == 0 else "train2014"
    stem = f"COCO_{split}_{i:012d}"
    os.makedirs(os.path.join(folder, split), exist_ok=True)
    _smooth_image(rng).save(os.path.join(folder, split, stem + ".jpg"), quality=90)
    captions[stem] = [" ".join(rng.choice(_WORDS, 8)) for _ in range(5)]
  with open(os.path.join(folder, "dict_key_imgID_value_caps_train_and_valid.pkl"), "wb") as f:
    pickle.dump(captions, f)


def _cpu_seconds() -> float:
  """User + system time of this process and its finished children (the pool workers)."""
  own, children = (
    resource.getrusage(resource.RUSAGE_SELF),
    resource.getrusage(resource.RUSAGE_CHILDREN),
  )
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str]) -> None:
  del argv
  with tempfile.TemporaryDirectory() as scratch:
    source = os.path.join(scratch, "course")
    build_course_layout(source, FLAGS.num_images)
    conversion, end_to_end, cpu_per_image = [], [], []
    for run in range(FLAGS.runs):
      output = os.path.join(scratch, f"out{run}")
      cpu_before = _cpu_seconds()
      start = time.perf_counter()
      metadata = prepare.prepare("ift6266", source, output, workers=FLAGS.workers, progress=False)
      seconds = time.perf_counter() - start
      images = sum(metadata["counts"][split]["images"] for split in ("train", "validation"))
      conversion.append(metadata["created"]["images_per_second"])
      end_to_end.append(images / seconds)
      cpu_per_image.append((_cpu_seconds() - cpu_before) / images)
      print(
        f"run {run}: {images} images, {conversion[-1]:,.0f} images/s converting, {end_to_end[-1]:,.0f} images/s end to end"
      )
  print(
    json.dumps(
      {
        "benchmark": "prepare_ift6266",
        "num_images": FLAGS.num_images,
        "cpus": len(os.sched_getaffinity(0)),
        "images_per_second": round(statistics.median(conversion)),
        "end_to_end_images_per_second": round(statistics.median(end_to_end)),
        "cpu_us_per_image": round(1e6 * statistics.median(cpu_per_image)),
        "load_average": os.getloadavg()[0],
      }
    )
  )


if __name__ == "__main__":
  app.run(main)
