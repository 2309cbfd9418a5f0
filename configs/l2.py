"""Context-encoder-style regression baseline: the vaegan U-Net and caption encoder, L2 loss.

`--config.model.use_caption=False` gives the no-text ablation.
"""

import ml_collections

from configs import common, vaegan


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base()
  c.model = vaegan.model_config()  # The same U-Net and caption encoder as vaegan.
  c.model.name = "l2"  # Model family (inpainting/models/registry.py).
  c.model.z_dim = 0  # No latent: one deterministic answer per input.
  c.model.use_caption = True  # False = all-zero condition (no caption information).
  del c.model.encoder_widths  # No posterior/prior.
  del c.model.disc_widths  # No discriminator.
  del c.model.conv_impl  # Only the discriminator has 4x4 stride-2 convs.

  c.loss = ml_collections.ConfigDict()
  c.loss.hole_weight = 1.0  # Per-pixel weight of hole pixels (raw output vs truth).
  c.loss.valid_weight = 0.1  # Per-pixel weight of border pixels (composited away later).
  c.loss.l2_weight = 1.0  # Weight of the hole-weighted squared error.
  c.loss.l1_weight = 0.0  # Weight of the hole-weighted absolute error (L1 + L2 if > 0).
  c.loss.cond_kl_weight = 0.001  # Weight of the conditioning-augmentation KL to N(0, I).

  c.optim = vaegan.optim_config()  # Adam, warm-up, schedule, clipping (see vaegan).
  c.optim.b1 = 0.9  # No adversarial game: the usual Adam beta1.
  del c.optim.d_learning_rate  # No discriminator.
  del c.optim.ema_decay  # One deterministic regressor: no moving average kept.
  # About 0.9 s per step at batch 64 on an idle 2-core CPU: 12 minutes with evaluations
  # (2026-11-27). vaegan's recipe (peak 1e-3, cosine, 1,000 steps) left l2 at the fills'
  # 16.8 dB hole PSNR; at this rate it leaves them near step 600 (18.9 dB at 800).
  c.num_train_steps = 800  # Optimizer steps.
  c.log_every_steps = 20  # Console + TensorBoard scalars.
  c.eval_every_steps = 200  # Validation losses and sample grids.
  c.checkpoint_every_steps = 200  # Orbax saves.
  if arg == "runlocal":  # A few minutes on a laptop.
    c.model.text = common.text_encoder("tiny")  # Smaller caption encoder.
    c.model.widths = (24, 48, 64)  # Narrower U-Net.
    c.global_batch_size = 32  # Half batch.
    c.num_train_steps = 300  # Short run.
    c.data.synthetic_num_train = 4_000  # Fewer scenes to prepare.
    c.data.synthetic_num_validation = 500  # Fewer held-out scenes.
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing")
  return c
