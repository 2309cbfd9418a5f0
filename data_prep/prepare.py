"""Offline converter: a captioned image source -> ArrayRecord shards + tokenizer.

    python -m data_prep.prepare --source=ift6266|coco|flickr|synthetic|quickdraw|sketchrnn|visdial
        --input=DIR --output_dir=DIR [--vocab_size=512] [--grayscale=skip|convert]
        [--num_shards=0] [--seed=0] [--num_train=20000 --num_validation=2000] [--workers=0]
        [--classes=cat,sheep --line_width=1.5 --augment=0] [--overwrite]

The output layout is described in inpainting/records.py. User errors (unknown source,
missing input, no usable image, existing output) print one line and exit with code 2.
The trainer calls `prepare` directly to build synthetic scenes on first use.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from data_prep.core import SOURCES, PrepareError, prepare

__all__ = ["PrepareError", "prepare", "main"]

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the CLI flags; only when run as a program, so importing `prepare` (as the
  trainer does) adds no global flags."""
  flags.DEFINE_string("source", None, f"Input kind: {' | '.join(SOURCES)}.")
  flags.DEFINE_string("input", "", "Source folder (not needed for synthetic).")
  flags.DEFINE_string("output_dir", None, "Dataset folder to create (must not exist).")
  flags.DEFINE_integer("vocab_size", 512, "SentencePiece vocabulary size (train split's text).")
  flags.DEFINE_string("grayscale", "skip", "Grayscale images: skip (counted) | convert (to RGB).")
  flags.DEFINE_integer("num_shards", 0, "Shards per split; 0 = one per 10,000 images.")
  flags.DEFINE_integer("seed", 0, "Seeds the flickr split and the synthetic scenes.")
  flags.DEFINE_integer("num_train", 20_000, "Synthetic only: train scenes.")
  flags.DEFINE_integer("num_validation", 2_000, "Synthetic only: validation scenes.")
  flags.DEFINE_integer("workers", 0, "Decoding processes; 0 = all CPUs for large inputs.")
  flags.DEFINE_list("classes", [], "Drawings: class words to keep (default: all).")
  flags.DEFINE_float("line_width", 1.5, "Drawings: stroke width in output pixels.")
  flags.DEFINE_integer("augment", 0, "Drawings: stroke-augmented copies of each train drawing.")
  flags.DEFINE_bool(
    "overwrite", False, "Replace an existing output folder once the new one is complete."
  )


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag is a one-line error with exit code 2."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    _fail(str(error))


def _fail(message: str) -> None:
  print(f"error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(2)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.source:
    _fail(f"--source is required: one of {', '.join(SOURCES)}")
  try:
    metadata = prepare(
      FLAGS.source,
      FLAGS.input,
      FLAGS.output_dir or "",
      vocab_size=FLAGS.vocab_size,
      grayscale=FLAGS.grayscale,
      num_shards=FLAGS.num_shards,
      seed=FLAGS.seed,
      num_train=FLAGS.num_train,
      num_validation=FLAGS.num_validation,
      workers=FLAGS.workers,
      overwrite=FLAGS.overwrite,
      classes=",".join(FLAGS.classes),
      line_width=FLAGS.line_width,
      augment=FLAGS.augment,
    )
  except PrepareError as error:
    _fail(str(error))
  summary = {
    "output_dir": FLAGS.output_dir,
    "counts": metadata["counts"],
    "skipped": {reason: n for reason, n in metadata["skipped"].items() if n},
  }
  print(json.dumps(summary))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=_parse_flags)
