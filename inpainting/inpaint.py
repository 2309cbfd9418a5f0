"""Inference: complete one photo from a caption.

  python -m inpainting.inpaint --workdir=W --image=photo.jpg --caption="a red star ..." \
      [--mask=center|box:x,y,w,h] [--num_samples=4] [--seed=0] --out=out.png

Any input size works: the photo is centre-cropped to a square and resized to 64x64 with
PIL's Lanczos filter, exactly as `data_prep` prepares training images. The output is one
row: input with the hole | the 64x64 input | K samples.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a program, so importing this module adds no global flags."""
  flags.DEFINE_string("workdir", None, "A trained run's workdir.")
  flags.DEFINE_string("image", None, "Input image (any size, any PIL-readable format).")
  flags.DEFINE_string("caption", "", "What the hole should contain.")
  flags.DEFINE_string("mask", "center", "center | box:x,y,w,h (pixels of the 64x64 image).")
  flags.DEFINE_integer("num_samples", 4, "Completions to draw.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_string("out", None, "Output PNG path.")
  flags.mark_flags_as_required(["workdir", "image", "out"])


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
  run = inference.load_run(workdir, step)
  if not caption.strip() and run.config.model.get("use_caption", True):
    raise UserError("this model is conditioned on captions: give a non-empty --caption")
  batch = run.batch_from_image(pixels, hole, [caption])
  samples = run.sample(batch, num_samples, seed)
  return run, batch, samples


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from inpainting.logs import quiet_libraries  # noqa: PLC0415

  quiet_libraries()
  from inpainting import images  # noqa: PLC0415
  from inpainting.errors import UserError  # noqa: PLC0415

  try:
    run, batch, samples = inpaint(
      FLAGS.workdir,
      FLAGS.image,
      FLAGS.caption,
      mask=FLAGS.mask,
      num_samples=FLAGS.num_samples,
      seed=FLAGS.seed,
      step=FLAGS.step,
    )
    out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
    if not os.path.isdir(out_dir):
      raise UserError(f"output folder {out_dir} does not exist")
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  images.save_png(FLAGS.out, run.visualize(batch, samples))
  print(f"wrote {FLAGS.out}: input | original | {len(samples)} samples")


if __name__ == "__main__":
  define_flags()
  app.run(main)
