"""Multi-turn completion: a completion after every turn of a conversation, state carried
across turns (inpainting/models/painter.py). Reads the synthetic scenes' context caption
and dialogue; `inpaint --dialogue` and evaluate's turn_t conditions show it turn by turn.
"""

import ml_collections

from configs import common, vaegan


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base()
  # Each example reads its context caption and a random number (0..3) of its turns; the
  # target is always the whole picture.
  c.data.text_source = "dialogue:any"
  c.data.max_caption_length = 64  # Context caption + 3 turns (about 60 tokens).

  c.model = vaegan.model_config()  # The vaegan U-Net and caption encoder settings.
  c.model.name = "painter"  # Model family (inpainting/models/registry.py).
  # Latent z size (0 = none: one deterministic completion per turn). With z, every part
  # has a prior p(z | border and canvas, state) and training a posterior (as vaegan's).
  # Without z (550 steps of batch 64) the painter never left the fills' level.
  c.model.z_dim = 32
  # Narrower than vaegan's (32, 64, 128): the U-Net runs once per part (4 times a step).
  # With vaegan's widths a step is 229 GFLOP, about 3.3 s at batch 64 on the 2-core CPU.
  c.model.widths = (24, 48, 96)
  c.model.num_parts = 4  # Context caption + turns read one by one (later turns join the last).
  c.model.reader_width = 128  # GRU state carried from turn to turn.
  del c.model.disc_widths  # No discriminator.
  del c.model.conv_impl  # Only the discriminator has 4x4 stride-2 convs.

  c.loss = ml_collections.ConfigDict()
  c.loss.hole_weight = 6.0  # L1/L2 weight of hole pixels (raw output vs truth), as vaegan.
  c.loss.valid_weight = 1.0  # Weight of border pixels (composited away later).
  c.loss.l1_weight = 1.0  # Weight of the hole-weighted absolute error.
  c.loss.l2_weight = 0.0  # Weight of the hole-weighted squared error.
  c.loss.kl_weight = 0.01  # Weight of KL(q || p) at the last part, with z_dim > 0 (as vaegan).
  # Nats per z dimension that KL(q || p) does not charge (0 = off). At 0 the posterior
  # closed within 50 steps (kl_z 0.04-0.15 nats) and the run stayed at the fills' level.
  c.loss.kl_free_bits = 0.1
  # Weight of KL(stop_gradient(q) || p): trains the prior even where free bits stop the KL's
  # gradient (0 = off). Free bits alone kept z open (2-3 nats); the completions from the
  # prior's means followed late (hole PSNR 16.9 dB at step 600, 19.2 dB at step 900). With
  # 1.0: 20.1 and 20.7 dB, compliance 0.12 after all turns (README "Results so far").
  c.loss.prior_fit_weight = 1.0

  c.optim = vaegan.optim_config()  # Adam, warm-up, schedule, clipping (see vaegan).
  c.optim.b1 = 0.9  # No adversarial game: the usual Adam beta1.
  c.optim.learning_rate = 1e-3  # Peak rate, as README command 1's vaegan.
  c.optim.schedule = "cosine"  # Decays to 0 at num_train_steps.
  del c.optim.d_learning_rate  # No discriminator.
  del c.optim.ema_decay  # No moving average kept.
  c.global_batch_size = 32  # Smaller, more steps (as README command 1's vaegan).
  c.num_train_steps = 900  # Optimizer steps: about 1.5 s each at batch 32 on 2 CPU cores.
  c.log_every_steps = 10  # Console + TensorBoard scalars.
  c.eval_every_steps = 300  # Validation losses and sample grids.
  c.checkpoint_every_steps = 300  # Orbax saves.
  if arg == "runlocal":  # A few minutes on a laptop.
    c.model.text = common.text_encoder("tiny")  # Smaller caption encoder.
    c.model.reader_width = 32  # Smaller GRU state.
    c.model.widths = (16, 32, 64)  # Narrower U-Net.
    c.model.encoder_widths = (16, 16, 32, 32)  # Narrower posterior/prior.
    c.num_train_steps = 300  # Short run.
    c.data.synthetic_num_train = 4_000  # Fewer scenes to prepare.
    c.data.synthetic_num_validation = 500  # Fewer held-out scenes.
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing")
  return c
