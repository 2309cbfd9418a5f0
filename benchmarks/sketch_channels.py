"""Sketches in RGB or one channel: what storing grey drawings as RGB costs, measured.

  python benchmarks/sketch_channels.py [--config=configs/sketch.py] [--batch=32] [--vocab_size=40]
      [--workdir=W]

1. Compute: XLA's FLOP count of one train step of the config (the trainer's step and FLOP
   reader, lowered on a stand-in batch), and of every layer whose size depends on the image's channel count, at 3
   channels and at 1: the generator's stem (image + mask, folded 2x2) and last conv (image
   out), the posterior's and prior's stems, the discriminator's first conv. Each is counted
   forward and backward (gradients for input and kernel: an upper bound) for every image
   it sees in a step (generator and encoders: B; discriminator: 2B in its update + B in
   the generator's loss). The difference over the step's FLOPs bounds what one channel
   would save.
2. Quality, with --workdir (a trained sketch run): do the samples come out grey? The
   spread max - min over R, G, B of the hole pixels of K samples of validation drawings
   (uint8 levels): mean, and the fraction of pixels over 2 levels.
The last line is JSON.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from inpainting import sharding, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/sketch.py", "Model config.", lock_config=False)
flags.DEFINE_integer("batch", 32, "Global batch size.")
flags.DEFINE_integer("vocab_size", 40, "Caption vocabulary of the stand-in batch.")
flags.DEFINE_string("workdir", None, "A trained sketch run: also measure the samples' colour.")
flags.DEFINE_integer("examples", 16, "Validation drawings sampled for the colour spread.")


def step_flops(config, batch_size: int, vocab_size: int) -> float:
  """XLA's FLOPs of the trainer's own train step (lowered, not run) on a stand-in batch."""
  config.global_batch_size = batch_size
  config.model.vocab_size = vocab_size
  mesh = sharding.make_mesh(config.mesh, batch_size)
  graphdef, state, _ = train.create_state(config, mesh)
  rng = np.random.default_rng(0)
  length = config.data.max_caption_length
  local = {
    "image": rng.uniform(-1, 1, (batch_size, 64, 64, 3)).astype(np.float32),
    "mask": np.ones((batch_size, 64, 64, 1), np.float32),
    "tokens": rng.integers(4, vocab_size, (batch_size, length)).astype(np.int32),
  }
  local["token_mask"] = local["tokens"] > 0
  batch = sharding.global_batch(local, mesh, tuple(local))
  step = jax.jit(train.make_train_step(config, graphdef))
  return train._flops(step.lower(state, batch, jax.ShapeDtypeStruct((), jnp.int32)))  # noqa: SLF001


def conv_flops(batch, size, cin, cout, kernel, stride) -> float:
  """XLA's FLOPs of a conv's forward and backward (input and kernel gradients)."""

  def loss(x, k):
    y = jax.lax.conv_general_dilated(
      x, k, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jnp.sum(y)

  x = jax.ShapeDtypeStruct((batch, size, size, cin), jnp.float32)
  k = jax.ShapeDtypeStruct((kernel, kernel, cin, cout), jnp.float32)
  lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, k)
  return train._flops(lowered)  # noqa: SLF001


def channel_layers(config, batch, channels):
  """FLOPs of the channel-dependent layers per train step for images of `channels`."""
  m = config.model
  fold = 4  # 2x2 space-to-depth
  image_in = (channels + 1) * fold  # image + mask
  return {
    "generator_stem": conv_flops(batch, 32, image_in, m.widths[0], 3, 1),
    "generator_out": conv_flops(batch, 32, m.widths[0], channels * fold, 3, 1),
    "posterior_stem": conv_flops(batch, 32, image_in, m.encoder_widths[0], 3, 1),
    "prior_stem": conv_flops(batch, 32, image_in, m.encoder_widths[0], 3, 1),
    "discriminator_first": conv_flops(3 * batch, 64, channels + 1, m.disc_widths[0], 4, 2),
  }


def colour_spread(workdir: str, count: int) -> dict:
  from inpainting import explore, images, inference, masks  # noqa: PLC0415

  run = inference.load_run(workdir)
  data = explore.Data(run.config.data.dir, "validation")
  chosen = data.examples[:count]
  hole = masks.make_batch(run.config.data.mask, len(chosen))
  batch = explore.make_batch(
    run, np.stack([e.image for e in chosen]), hole, [e.captions[0] for e in chosen]
  )
  samples = images.to_uint8(run.sample(batch, 4, 0)).astype(np.int16)
  spread = (samples.max(-1) - samples.min(-1))[:, hole[..., 0] > 0.5]
  return {
    "colour_spread_mean_levels": float(spread.mean()),
    "colour_spread_over_2_levels": float((spread > 2).mean()),
    "colour_spread_max_levels": int(spread.max()),
  }


def main(argv):
  del argv
  config = FLAGS.config
  step = step_flops(config, FLAGS.batch, FLAGS.vocab_size)
  rgb, grey = channel_layers(config, FLAGS.batch, 3), channel_layers(config, FLAGS.batch, 1)
  saved = sum(rgb.values()) - sum(grey.values())
  result = {
    "batch": FLAGS.batch,
    "step_gflops": step / 1e9,
    "channel_layers_gflops_rgb": {k: v / 1e9 for k, v in rgb.items()},
    "channel_layers_gflops_one_channel": {k: v / 1e9 for k, v in grey.items()},
    "one_channel_saves_at_most": saved / step,
  }
  print(
    f"train step {step / 1e9:.2f} GFLOP; channel-dependent layers {sum(rgb.values()) / 1e9:.3f} "
    f"GFLOP in RGB, {sum(grey.values()) / 1e9:.3f} in one channel: one channel saves at most "
    f"{100 * saved / step:.1f}% of the step"
  )
  if FLAGS.workdir:
    result.update(colour_spread(FLAGS.workdir, FLAGS.examples))
    print(
      f"samples' colour spread over the hole: mean {result['colour_spread_mean_levels']:.2f} "
      f"levels, {100 * result['colour_spread_over_2_levels']:.1f}% of pixels over 2 levels"
    )
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
