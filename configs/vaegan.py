"""The main model: caption-conditioned VAE-GAN with a learned conditional prior.

Sized to train at a useful rate on a 2-core CPU (batch 32, 2,000 steps). `get_config("runlocal")`
shrinks it further for a quick look.
"""

import ml_collections

from configs import common


def model_config(text_size: str = "base") -> ml_collections.ConfigDict:
  """The `config.model` block of vaegan (l2 reuses it)."""
  m = ml_collections.ConfigDict()
  m.name = "vaegan"  # Model family (inpainting/models/registry.py).
  m.dtype = "float32"  # Compute dtype: float32 | bfloat16 (parameters stay float32).
  m.vocab_size = 0  # Caption vocabulary; 0 = filled in by the trainer from the tokenizer.
  m.text = common.text_encoder(text_size)  # Caption encoder + conditioning augmentation.
  m.widths = (32, 64, 128)  # U-Net channels at 32, 16, 8 px (input folded 64 -> 32 px).
  m.attention_resolutions = (16, 8)  # U-Net levels (px) with cross-attention to the words.
  m.attention_heads = 4  # Heads of those cross-attentions (must divide the level width).
  m.z_dim = 32  # Latent z size; enters at the bottleneck and in every FiLM.
  # Up-path levels (px; of 8, 16, 32) given a dense map of (c, z); () = off. Measured with
  # l2, 300 steps, 256 held-out scenes: (8, 16) gave shape compliance 0.40 [0.34, 0.47]
  # against 0.49 [0.43, 0.55] off, hole PSNR 20.2 against 20.9 dB: not adopted.
  m.cond_map_resolutions = ()
  m.cond_map_channels = 16  # Channels of those maps before a 1x1 conv to the level's width.
  # Fourier features of the pixel coordinates added to the U-Net input: sin/cos of x and y
  # at pi * 2^0..2^(F-1) (4 F channels); 0 = off. Measured with cond_map (8, 16), README
  # command 1, 256 held-out scenes, K=8: shape compliance 0.35 against 0.37 without either,
  # all three 0.34 both, still blobs: not adopted.
  m.coord_frequencies = 0
  # Residual 3x3 ConvBlocks added per up-path level (depth where outlines are drawn). 1,
  # with attention_resolutions (32, 16, 8), on README command 1 (256 held-out scenes, K=8,
  # 2026-11-27, one run): compliance 0.62 [0.56, 0.68] against 0.57 [0.51, 0.63], hole PSNR
  # 23.0 against 22.5 dB, but 3.7 distinct classes of 8 under the empty caption against
  # 4.8, and training 1.3x as long (18.5 against 14 min): not adopted.
  m.extra_up_blocks = 0
  m.encoder_widths = (32, 32, 64, 64)  # Posterior/prior channels at 32, 16, 8, 4 px.
  m.disc_widths = (32, 64, 128)  # Discriminator channels at 32, 16, 8 px.
  m.conv_impl = "auto"  # D's 4x4 stride-2 conv maths: auto (measured CPU choice) | xla.
  return m


def loss_config() -> ml_collections.ConfigDict:
  loss = ml_collections.ConfigDict()
  loss.hole_weight = 6.0  # L1 weight of hole pixels (raw output vs truth).
  loss.valid_weight = 1.0  # L1 weight of border pixels (the raw output is composited away).
  loss.recon_weight = 1.0  # Weight of the hole-weighted L1 in the G loss.
  loss.kl_weight = 0.01  # Weight of KL(q(z|x,c) || p(z|border,c)), summed over z dims.
  # Weight of the conditioning-augmentation KL to N(0, I), summed over cond_dim. At 0.001
  # README command 1 shuts the condition vector down (its KL falls from 6 to 1.5 nats), so
  # the caption reaches G through cross-attention alone. 1e-5 with cond_map (8, 16) kept it
  # open (240 nats) but gave compliance 0.375 [0.32, 0.43] against 0.43 [0.36, 0.49] and
  # hole PSNR 22.0 against 22.3 dB (256 held-out scenes, K=8, 2026-11-27): not adopted.
  loss.cond_kl_weight = 0.001
  loss.gan_loss = "hinge"  # hinge | nonsaturating.
  # Weight of G's adversarial loss. 0.5 on README command 1 (with adversarial_patches
  # "all"; 256 held-out scenes, K=8, 2026-11-27): compliance 0.535 [0.47, 0.59] against
  # 0.57 [0.51, 0.63], hole PSNR 22.6 against 22.5 dB: not adopted.
  loss.adversarial_weight = 0.1
  # D's patch logits that the adversarial terms average: all | hole (each patch weighted by
  # its share of hole pixels; border-only patches look the same in real and completed
  # images, and with "all" they are 3/4 of the centre mask's 8x8 logits).
  loss.adversarial_patches = "all"
  loss.mismatch_weight = 0.5  # D loss weight of real images with a wrong caption (as fake).
  loss.feature_matching = 0.0  # Weight of L1 feature matching on D features; 0 = off.
  loss.prior_adversarial_weight = 0.0  # G's adversarial loss on z ~ prior samples (0 = off).
  # Weight of KL(stop_gradient(q) || p), which trains only the prior (KL balancing): the
  # prior then tracks what the posterior encodes without the posterior paying more. 0 = off.
  loss.prior_fit_weight = 0.0
  # Nats per z dimension that KL(q || p) does not penalise (0 = off). 0.1 with
  # prior_fit_weight 1.0 on README command 1 (256 held-out scenes, K=8, 2026-11-27, the
  # control run on the same host): kl_z 2.2 nats at the end against 0.13, distinct classes
  # of 8 under the empty caption 7.0 against 4.8, but compliance 0.50 [0.44, 0.56] against
  # 0.57 [0.51, 0.63] and 0.15 against 0.24 on held-out wordings; the 8 samples of a true
  # caption stay copies (diversity LPIPS 0.002). Not adopted.
  loss.kl_free_bits = 0.0
  loss.r1_weight = 0.0  # R1 penalty gamma on D's gradient at real images (0 = off).
  # Share of each batch trained with the empty caption (0 = off; get_config sets 0.1).
  loss.caption_dropout = 0.0
  # Weight of LPIPS(completion, real) in the G loss (0 = off). At 1.0 (alexnet) with README
  # command 1 (256 held-out scenes, K=8, 2026-11-27): LPIPS 0.051 against 0.081, crisper
  # edges and grain in the hole, but compliance 0.41 [0.34, 0.47] against 0.43 and hole
  # PSNR 22.0 against 22.3 dB; the step costs about 5% more. Not adopted.
  loss.perceptual_weight = 0.0
  loss.perceptual_net = "alexnet"  # LPIPS backbone of that loss: alexnet | vgg16.
  return loss


def optim_config() -> ml_collections.ConfigDict:
  optim = ml_collections.ConfigDict()
  # Peak Adam learning rate of G, text encoder, posterior, prior (get_config raises it to
  # 1e-3 with a cosine decay; l2 keeps 2e-4). At 400 steps, 1e-3 gave compliance 0.40
  # [0.34, 0.46] against 0.375 [0.32, 0.44] and hole PSNR 21.6 against 20.9 dB.
  optim.learning_rate = 2e-4
  # Peak Adam learning rate of the discriminator. 2e-3 on README command 1 (adversarial
  # patches "all"; 2026-11-27): D's real-fake logit gap opened to 1.7 by step 200 but fell
  # to 0.1-0.2 by step 500 as with 2e-4; compliance 0.55 [0.48, 0.61] against 0.57, hole
  # PSNR 21.7 against 22.5 dB: not adopted.
  optim.d_learning_rate = 2e-4
  optim.b1 = 0.5  # Adam beta1 (low for GAN stability).
  optim.b2 = 0.999  # Adam beta2.
  optim.warmup_steps = 20  # Linear warm-up from 0 to the peak learning rate.
  optim.schedule = "constant"  # After warm-up: constant | cosine (to 0 at num_train_steps).
  optim.grad_clip = 0.0  # Global-norm gradient clipping per optimizer; 0 = off.
  # Moving average of G's weights for sampling/evaluation; 0 = off. 0.99 on README command
  # 1 with adversarial_weight 0.5, evaluated with and without it (`evaluate --average`,
  # the same checkpoint, 2026-11-27): hole PSNR 22.645 against 22.647 dB, compliance 0.535
  # both. The cosine schedule already ends at learning rate 0, so there is nothing to
  # average out: off. With a constant learning rate it may help (not measured).
  optim.ema_decay = 0.0
  return optim


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base()
  c.model = model_config()
  c.loss = loss_config()
  c.optim = optim_config()
  # README command 1: batch 32 for 2,000 steps, about 0.65 s per step on an idle 2-core
  # CPU without AVX-512 (~50 images/s), so about 23 minutes with data preparation and
  # evaluations; about 14 minutes on a 2-core EPYC with AVX-512 (~78 images/s). Against
  # batch 64 for 1,000 steps (the same images; 256 held-out scenes, K=8, 2026-11-27):
  # compliance 0.63 [0.57, 0.69] against 0.43 [0.36, 0.49], hole PSNR 22.7 against 22.3 dB,
  # held-out wordings 0.21 against 0.19. Batch 16 for 4,000 steps gave 0.62, 0.32 on held-out
  # wordings, but 3.9 distinct classes of 8 under the empty caption against 4.8.
  c.optim.learning_rate = 1e-3  # Peak learning rate of G's optimizer (see optim_config).
  c.optim.schedule = "cosine"  # Decays to 0 at num_train_steps.
  # Empty captions for 10% of each batch, so that the prior learns p(z | border) too. With
  # the rest of this recipe (256 held-out scenes, K=8): distinct classes of 8 under the
  # empty caption 5.2 [5.1, 5.3] against 2.4, true-caption compliance 0.43 against 0.44.
  c.loss.caption_dropout = 0.1
  # D's adversarial terms over the hole's patches only (see loss_config). Same recipe
  # otherwise (256 held-out scenes, K=8, 2026-11-27, one run each): D's real-fake logit
  # gap stays open longer; diversity LPIPS under the empty caption 0.141 against 0.082,
  # distinct classes of 8 5.0 against 4.8, compliance 0.59 [0.53, 0.65] against 0.57
  # [0.51, 0.63], LPIPS 0.053 against 0.058, hole PSNR 22.2 against 22.5 dB (grain drawn).
  c.loss.adversarial_patches = "hole"
  c.global_batch_size = 32  # Per-step batch over all devices (see above).
  c.num_train_steps = 2000  # Optimizer steps (D and G one each per step).
  c.log_every_steps = 10  # Console + TensorBoard scalars.
  c.eval_every_steps = 500  # Validation losses and sample grids.
  c.checkpoint_every_steps = 500  # Orbax saves.
  if arg == "runlocal":  # A few minutes on a laptop.
    c.model.text = common.text_encoder("tiny")  # Smaller caption encoder.
    c.model.widths = (24, 48, 64)  # Narrower U-Net.
    c.model.encoder_widths = (16, 16, 32, 32)  # Narrower posterior/prior.
    c.model.disc_widths = (16, 32, 64)  # Narrower discriminator.
    c.num_train_steps = 300  # Short run.
    c.data.synthetic_num_train = 4_000  # Fewer scenes to prepare.
    c.data.synthetic_num_validation = 500  # Fewer held-out scenes.
  elif arg == "gpu":  # One GPU (a cluster: scale global_batch_size; see README "Scaling out").
    # Measured (benchmarks/RESULTS.md): in bf16 at batch 1024 this model runs 41k images/s
    # in 3.6 GiB on an H100 (2026-11-24; batch 4096 gains 27% for 4x the memory) and 44.6k
    # images/s on an H200 (2026-11-26).
    c.model.dtype = "bfloat16"  # bf16 compute, float32 parameters and optimizer state.
    c.global_batch_size = 1024  # Per-step batch over all devices.
    c.num_train_steps = 15_000  # ~6-7 minutes of steps at the measured rate (77 epochs).
    c.log_every_steps = 100  # Console + TensorBoard scalars.
    c.eval_every_steps = 2_500  # Validation losses and sample grids.
    c.checkpoint_every_steps = 2_500  # Measured on the H200: 0.81 s per save, 1.4% of time.
    c.data.num_workers = 8  # Grain decode processes: 41.9k examples/s on a 16-core H200 host.
    c.data.synthetic_num_train = 200_000  # More scenes: 20k would be seen ~750 times.
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use 'runlocal', 'gpu' or nothing")
  return c
