"""A test-only model family that reads an extra batch field: a second caption.

It proves the family contract: this file plus a config (`two_caption_config()` in
tests/test_contract.py) train, evaluate and sample through the unchanged trainer,
`evaluate` and `inpaint`. The model is the l2 regression model conditioned on the two
captions of each record concatenated (the first caption's tokens, then the second's).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from inpainting import batching
from inpainting.models import l2, registry

NAME = "tests.two_caption_family"


def second_caption(examples, batch, tokenizer, max_caption_length):
  """tokens2 / token_mask2: each record's second caption (its first when it has one)."""
  captions = [
    e.captions[1] if len(e.captions) > 1 else batch["caption"][i] for i, e in enumerate(examples)
  ]
  tokens, mask = tokenizer.encode(captions, max_caption_length)
  return {"tokens2": tokens, "token_mask2": mask, "caption2": np.array(captions, np.str_)}


def _both(batch):
  """The batch l2 sees: the two captions' tokens side by side."""
  return {
    **batch,
    "tokens": jnp.concatenate([batch["tokens"], batch["tokens2"]], axis=1),
    "token_mask": jnp.concatenate([batch["token_mask"], batch["token_mask2"]], axis=1),
  }


def create(config: ml_collections.ConfigDict, rngs):
  wide = ml_collections.ConfigDict(config.to_dict())
  wide.data.max_caption_length = 2 * config.data.max_caption_length
  return l2.create(wide, rngs)


def train_step(bundle, batch, rng, hp):
  return l2.train_step(bundle, _both(batch), rng, hp)


def sample(bundle, batch, rng, num_samples, hp):
  return l2.sample(bundle, _both(batch), rng, num_samples, hp)


def evaluate(bundle, batch, rng, hp):
  return l2.evaluate(bundle, _both(batch), rng, hp)


registry.register(
  NAME,
  registry.Family(
    hparams=l2.hparams,
    create=create,
    train_step=train_step,
    sample=sample,
    evaluate=evaluate,
    check_config=l2.check_config,
    batch=batching.BatchSpec(
      device_keys=(*batching.CAPTION_KEYS, "tokens2", "token_mask2"),
      extra_fields=second_caption,
    ),
    progress_metrics=("loss", "l1_hole"),
  ),
)
