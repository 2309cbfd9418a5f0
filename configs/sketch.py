"""The main model (vaegan) on rasterised QuickDraw sketches.

Variants, comma-separated after the file name (`--config=configs/sketch.py:full,runlocal`):
  center    (default) the centre 32x32 of each drawing erased: completion, z-switching
  full      everything erased: pure text-to-drawing (and unconditional samples)
  runlocal  a tiny model and a short run, for a quick look or a test

Prepare the data first (README "Sketches"), e.g. the four-class set of the experiment:

  python -m data_prep.prepare --source=quickdraw --input=../shared/data/quickdraw_344x25 \
      --classes="cat,sheep,house,The Eiffel Tower" --augment=4 --output_dir=data/quickdraw4

Sized for about 14 minutes per variant on the shared 2-core CPU (scripts/sketch_experiment.sh
trains both, within 30 minutes).
"""

import ml_collections

from configs import common, vaegan

VARIANTS = ("center", "full", "runlocal")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = {v.strip() for v in (arg or "").split(",") if v.strip()}
  unknown = variants - set(VARIANTS)
  if unknown or {"center", "full"} <= variants:
    raise ValueError(f"unknown config argument {arg!r}; use center or full, optionally ,runlocal")
  c = common.base()
  c.model = vaegan.model_config("tiny")  # The main family; tiny text encoder (5 caption forms).
  c.model.widths = (24, 48, 64)  # U-Net channels at 32, 16, 8 px: line drawings need little.
  c.model.attention_resolutions = (8,)  # Cross-attention to the caption's words at 8 px only.
  c.model.attention_heads = 2  # Divides 64.
  c.model.z_dim = 16  # Latent z: pose, style and, with the full mask, the whole drawing.
  c.model.encoder_widths = (16, 16, 32, 32)  # Posterior/prior channels at 32, 16, 8, 4 px.
  c.model.disc_widths = (16, 32, 64)  # Discriminator channels at 32, 16, 8 px.
  c.loss = vaegan.loss_config()  # vaegan's losses and weights (not tuned for sketches).
  c.optim = vaegan.optim_config()  # vaegan's Adam (2e-4, b1 0.5, 20 warm-up steps).

  c.data.dir = "data/quickdraw4"  # Prepared sketch folder (see the docstring).
  c.data.mask = "full" if "full" in variants else "center"  # The variant's hole.
  c.data.random_flip = True  # Drawings mirror freely; their captions never say left/right.
  # Tokens per caption incl. BOS/EOS. SentencePiece trained on a few class words keeps a
  # vocabulary of ~35 pieces, nearly letters: "a quick drawing of The Eiffel Tower" is 27
  # tokens, and the class word comes last, so a short limit would cut it off.
  c.data.max_caption_length = 40
  c.data.caption = "random"  # One of the five paraphrases per example per epoch.
  c.data.prefetch_batches = 2  # Batches buffered ahead (a small CPU machine).

  # Examples per step. The trainer's light evaluation and sample grids need full batches
  # of held-out data, and the 4-class set holds out 20 drawings: at 32 there would be none.
  c.global_batch_size = 16
  # 0.17 s per step on the 2-core CPU at load 3, ~0.3 s under other jobs' load: 14 minutes
  # give 2500-4500 steps. scripts/sketch_experiment.sh stops each variant at 14 minutes of
  # wall clock (SIGTERM: the trainer saves and exits), whichever comes first.
  c.num_train_steps = 4000
  c.log_every_steps = 100  # Console + TensorBoard scalars.
  c.eval_every_steps = 500  # Light evaluation + sample grid.
  c.checkpoint_every_steps = 500  # Orbax saves (and at the end, and on SIGTERM).
  c.num_eval_batches = 1  # One batch of 16 of the 20 held-out drawings.
  c.num_grid_examples = 8  # Examples in the sample grid.
  c.num_grid_samples = 4  # Prior samples per example in the grid.

  if "runlocal" in variants:  # Seconds per run: for tests and a first look.
    c.model.widths = (8, 16, 16)  # Narrowest U-Net that keeps 3 levels.
    c.model.attention_heads = 2  # Divides 16.
    c.model.z_dim = 8  # Smaller latent.
    c.model.encoder_widths = (8, 8, 16, 16)  # Narrow posterior/prior.
    c.model.disc_widths = (8, 16, 16)  # Narrow discriminator.
    c.optim.warmup_steps = 0  # No warm-up in a few steps.
    c.global_batch_size = 8  # Small batches.
    c.num_train_steps = 20  # A smoke run.
    c.log_every_steps = 5  # Scalars every few steps.
    c.eval_every_steps = 20  # One evaluation, at the end.
    c.checkpoint_every_steps = 20  # One checkpoint, at the end.
    c.num_grid_examples = 4  # Smaller grid.
    c.num_grid_samples = 2  # Fewer samples per example.
  return c
