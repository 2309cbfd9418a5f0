"""Inference: complete one photo from a caption, or from a conversation turn by turn.

  python -m inpainting.inpaint --workdir=W --image=photo.jpg --caption="a red star ..." \
      [--mask=center|box:x,y,w,h] [--num_samples=4] [--seed=0] --out=out.png
  python -m inpainting.inpaint --workdir=W --image=photo.jpg --caption="CONTEXT" \
      --dialogue="what is in the middle?|a star||which colour?|red" --out=turns.png

Any input size works: the photo is centre-cropped to a square and resized to 64x64 with
PIL's Lanczos filter, exactly as `data_prep` prepares training images. The output is one
row: input with the hole | the 64x64 input | K samples. With --dialogue (turns separated by
"||", question and answer by "|", or a JSON file of [{"question", "answer"}, ...]) it is
one row per turn t = 0..T: the text of the context caption (--caption) and the first t
turns, written the way the run's data.text_source writes them, with the same sampling seed
in every row.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a program, so importing this module adds no global flags."""
  flags.DEFINE_string("workdir", None, "A trained run's workdir.")
  flags.DEFINE_string("image", None, "Input image (any size, any PIL-readable format).")
  flags.DEFINE_string("caption", "", "What the hole should contain (with --dialogue: context).")
  flags.DEFINE_string("dialogue", "", "Turns 'q|a||q|a', or a JSON file of them: a row per turn.")
  flags.DEFINE_string("mask", "center", "center | box:x,y,w,h (pixels of the 64x64 image).")
  flags.DEFINE_integer("num_samples", 4, "Completions to draw.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_string("out", None, "Output PNG path.")
  flags.mark_flags_as_required(["workdir", "image", "out"])


def _load_input(workdir: str, image_path: str, mask: str, num_samples: int, step: int | None):
  """(the Run, 64x64 pixels, hole) after the checks every mode shares.

  Raises:
    UserError: unreadable image, bad mask, too few samples or a missing checkpoint.
  """
  from inpainting import images, inference, masks  # noqa: PLC0415
  from inpainting.errors import UserError  # noqa: PLC0415

  if num_samples < 1:
    raise UserError("--num_samples must be at least 1")
  try:
    hole = masks.make(masks.parse(mask))
  except ValueError as error:
    raise UserError(str(error)) from None
  if not os.path.isfile(image_path):
    raise UserError(f"no such image: {image_path}")
  try:
    pixels = images.load(image_path, grayscale="convert")
  except images.ImageError as error:
    raise UserError(f"cannot read image {image_path}: {error}") from None
  return inference.load_run(workdir, step), pixels, hole


def inpaint(
  workdir: str,
  image_path: str,
  caption: str,
  *,
  mask: str = "center",
  num_samples: int = 4,
  seed: int = 0,
  step: int | None = None,
):
  """Returns (the Run, the one-example batch, samples [K, 1, ...] from the run's family).

  Raises:
    UserError: unreadable image, bad mask, missing checkpoint, or an empty caption for a
      model that uses captions.
  """
  from inpainting.errors import UserError  # noqa: PLC0415

  run, pixels, hole = _load_input(workdir, image_path, mask, num_samples, step)
  if not caption.strip() and run.config.model.get("use_caption", True):
    raise UserError("this model is conditioned on captions: give a non-empty --caption")
  batch = run.batch_from_image(pixels, hole, [caption])
  return run, batch, run.sample(batch, num_samples, seed)


def parse_dialogue(value: str) -> list[dict[str, str]]:
  """Turns from "q|a||q|a" or from a JSON file [{"question", "answer"}, ...].

  Raises:
    UserError: (one line) a malformed value or file.
  """
  from inpainting.errors import UserError  # noqa: PLC0415

  if os.path.isfile(value):
    try:
      with open(value, encoding="utf-8") as f:
        turns = json.load(f)
      return [{"question": str(t["question"]), "answer": str(t["answer"])} for t in turns]
    except (OSError, ValueError, TypeError, KeyError) as error:
      raise UserError(
        f"--dialogue file {value}: expected a JSON list of {{question, answer}} ({error!r})"
      ) from None
  turns = []
  for number, text in enumerate(value.split("||"), 1):
    parts = text.split("|")
    if len(parts) != 2 or not all(p.strip() for p in parts):
      raise UserError(f"--dialogue turn {number} {text!r}: write it as 'question|answer'")
    turns.append({"question": parts[0].strip(), "answer": parts[1].strip()})
  return turns


def inpaint_dialogue(
  workdir: str,
  image_path: str,
  context: str,
  turns: list[dict[str, str]],
  *,
  mask: str = "center",
  num_samples: int = 4,
  seed: int = 0,
  step: int | None = None,
) -> tuple[Any, list[str], list[dict[str, np.ndarray]], list[np.ndarray]]:
  """Per turn t = 0..len(turns): (the Run, the texts, the batches, the samples).

  Row t reads the context caption and the first t turns as the run's data.text_source
  reads them (a caption-trained run: context, then turns). Every row uses the same seed;
  a row's text may be empty (no context, no turn yet), which the model reads as the empty
  caption.
  """
  from inpainting import batching, records  # noqa: PLC0415

  run, pixels, hole = _load_input(workdir, image_path, mask, num_samples, step)
  source = batching.text_source_of(run.config.data)
  # conversation_text refuses an example without context; " " stands for none.
  example = records.Example(
    id="input", image=pixels, captions=[], context_caption=context or " ", dialogue=turns
  )
  texts = [
    batching.conversation_text(example, batching.text_at_turn(source, t))
    for t in range(len(turns) + 1)
  ]
  batches = [run.batch_from_image(pixels, hole, [text]) for text in texts]
  samples = [run.sample(b, num_samples, seed) for b in batches]
  return run, [batching.readable(t) for t in texts], batches, samples


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from inpainting.logs import quiet_libraries  # noqa: PLC0415

  quiet_libraries()
  from inpainting import images  # noqa: PLC0415
  from inpainting.errors import UserError  # noqa: PLC0415

  options = dict(mask=FLAGS.mask, num_samples=FLAGS.num_samples, seed=FLAGS.seed, step=FLAGS.step)
  try:
    out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
    if not os.path.isdir(out_dir):
      raise UserError(f"output folder {out_dir} does not exist")
    if FLAGS.dialogue:
      turns = parse_dialogue(FLAGS.dialogue)
      run, texts, batches, samples = inpaint_dialogue(
        FLAGS.workdir, FLAGS.image, FLAGS.caption, turns, **options
      )
    else:
      run, batch, sample = inpaint(FLAGS.workdir, FLAGS.image, FLAGS.caption, **options)
      texts, batches, samples = [FLAGS.caption], [batch], [sample]
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  rows = [run.visualize(b, s) for b, s in zip(batches, samples)]
  images.save_png(FLAGS.out, np.concatenate(rows, axis=0))
  if FLAGS.dialogue:
    for turn, text in enumerate(texts):
      print(f"row {turn} (after {turn} turns): {text}")
  print(f"wrote {FLAGS.out}: input | original | {len(samples[0])} samples, {len(rows)} row(s)")


if __name__ == "__main__":
  define_flags()
  app.run(main)
