"""The classic pix2pix (U-Net 6 downsamplings + 3-layer PatchGAN), exactly as the reference.

A fixed architecture so that an outside implementation can be compared with it; captions
are ignored. `get_config("runlocal")` only shortens the run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base()
  c.global_batch_size = 64  # The comparison setting.
  c.num_train_steps = 3_000  # Optimizer steps (about 14 s each at batch 64 on a 2-core CPU).

  c.model = ml_collections.ConfigDict()
  c.model.name = "pix2pix"  # Model family (inpainting/models/registry.py).
  c.model.dtype = "float32"  # Compute dtype: float32 | bfloat16 (parameters stay float32).
  c.model.vocab_size = 0  # Filled in by the trainer from the tokenizer; unused (no text).
  c.model.ngf = 64  # Generator base width (reference value; changes the parameter count).
  c.model.ndf = 64  # Discriminator base width (reference value).
  c.model.num_downs = 6  # U-Net downsamplings: 64 px -> 1 px.
  c.model.skip_after_leaky_relu = True  # Reference quirk: skips carry LeakyReLU(x) (in-place op).
  c.model.conv_impl = "auto"  # 4x4 stride-2 conv maths: auto (measured CPU choice) | xla.
  c.model.sample_dropout = False  # Dropout at sampling time (varied samples); off = eval mode.

  c.loss = ml_collections.ConfigDict()
  c.loss.l1_weight = 100.0  # lambda_L1: weight of the whole-image L1 next to the BCE GAN loss.

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 2e-4  # Generator Adam learning rate.
  c.optim.d_learning_rate = 2e-4  # Discriminator Adam learning rate.
  c.optim.b1 = 0.5  # Adam beta1.
  c.optim.b2 = 0.999  # Adam beta2.
  c.optim.warmup_steps = 0  # Linear warm-up steps (reference: none).
  c.optim.schedule = "constant"  # constant | cosine (the reference decays linearly at the end).
  c.optim.grad_clip = 0.0  # Global-norm clipping; 0 = off (reference: none).
  if arg == "runlocal":
    c.num_train_steps = 100  # Short run.
    c.eval_every_steps = 50  # Validation losses and sample grids.
    c.checkpoint_every_steps = 50  # Orbax saves.
    c.log_every_steps = 10  # Console + TensorBoard scalars.
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing")
  return c
