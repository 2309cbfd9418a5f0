"""vaegan made tiny: trains in seconds on a CPU (the trainer's tests use it)."""

import ml_collections

from configs import common, vaegan


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg  # No variants.
  c = vaegan.get_config()  # The main model, shrunk below.
  c.model.text = common.text_encoder("tiny")  # Smallest caption encoder.
  c.model.vocab_size = 64  # Replaced by the trainer with the tokenizer's size.
  c.model.widths = (8, 16, 16)  # U-Net channels at 32, 16, 8 px.
  c.model.attention_resolutions = (8,)  # One cross-attention level (keeps compiling quick).
  c.model.attention_heads = 2  # Divides 16.
  c.model.z_dim = 8  # Latent size.
  c.model.encoder_widths = (8, 8, 16, 16)  # Posterior/prior channels.
  c.model.disc_widths = (8, 16, 16)  # Discriminator channels.
  c.optim.warmup_steps = 0  # No warm-up: the run is 20 steps.
  c.optim.learning_rate = 2e-4  # G's rate before vaegan's 1e-3 (the tests' recorded values).
  c.optim.schedule = "constant"  # No decay over the 20 steps.
  c.loss.caption_dropout = 0.0  # Off, as when the tests' values were recorded.
  c.data.vocab_size = 256  # BPE vocabulary on the synthetic captions (most words whole).
  c.data.synthetic_num_train = 256  # Scenes generated for training.
  c.data.synthetic_num_validation = 64  # Held-out scenes.
  c.global_batch_size = 8  # Divides the 4 fake test devices.
  c.num_train_steps = 20  # Total steps.
  c.log_every_steps = 5  # Scalars every few steps.
  c.eval_every_steps = 10  # Light evaluation twice per run.
  c.checkpoint_every_steps = 10  # Checkpoints twice per run.
  c.num_eval_batches = 2  # Validation batches per evaluation.
  c.num_grid_examples = 4  # Examples in the sample grid.
  c.num_grid_samples = 2  # Prior samples per example in the grid.
  return c
