"""Model families: the only place the trainer learns what a model is.

A family is one file in `inpainting/models/` that registers itself here with a `Family`.
The trainer, evaluator and inpaint command only ever call these four functions, so adding a
model never adds a branch to them.

The batch every family receives (all arrays, leading axis = batch):
  image        float32 [B, 64, 64, 3] in [-1, 1]    the full ground-truth image
  mask         float32 [B, 64, 64, 1]               1 inside the hole (unknown), 0 on the border
  tokens       int32   [B, L]                        caption ids, 0 = padding
  token_mask   bool    [B, L]                        True for real tokens
The model sees the image only through `masked_input(batch)` except where it is allowed the
ground truth (the posterior encoder, the losses, the discriminator's real branch).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from inpainting.errors import UserError

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Family:
  """How to build, train and sample one model family.

  Attributes:
    create: (config, rngs) -> nnx.Module holding every trainable part *and* its
      optimizer(s) (nnx.Optimizer). The trainer splits it once with `nnx.split` and
      carries the resulting state through a jitted step.
    train_step: (bundle, batch, rng, config) -> dict of scalar metrics. Updates the
      bundle in place (NNX style); the trainer wraps it in a pure, donated jit.
    sample: (bundle, batch, rng, num_samples) -> float32 [num_samples, B, 64, 64, 3]
      composited completions in [-1, 1] (border copied from the input).
    eval_losses: optional (bundle, batch, rng) -> dict of scalars on held-out data.
  """

  create: Callable[[ml_collections.ConfigDict, nnx.Rngs], nnx.Module]
  train_step: Callable[[nnx.Module, Batch, jax.Array, ml_collections.ConfigDict], dict[str, Any]]
  sample: Callable[[nnx.Module, Batch, jax.Array, int], jax.Array]
  eval_losses: Callable[[nnx.Module, Batch, jax.Array], dict[str, Any]] | None = None


_FAMILIES: dict[str, Family] = {}
# Module that defines each family; imported lazily so unused models cost nothing.
_MODULES = {
  "vaegan": "inpainting.models.vaegan",
  "l2": "inpainting.models.l2",
  "pix2pix": "inpainting.models.pix2pix",
}


def register(name: str, family: Family) -> None:
  _FAMILIES[name] = family


def get(name: str) -> Family:
  """Returns the registered family `name`; UserError (one line) if unknown."""
  if name not in _FAMILIES:
    if name not in _MODULES:
      raise UserError(f"unknown model {name!r}; choose one of {sorted(_MODULES)}")
    importlib.import_module(_MODULES[name])
  return _FAMILIES[name]


def masked_input(batch: Batch) -> jax.Array:
  """Border pixels plus the mask channel: [B, H, W, 4]; the hole is zeroed."""
  known = batch["image"] * (1.0 - batch["mask"])
  return jnp.concatenate([known, batch["mask"]], axis=-1)


def composite(generated: jax.Array, batch: Batch) -> jax.Array:
  """Copies the known border from the input; only the hole comes from the model."""
  mask = batch["mask"].astype(generated.dtype)
  return batch["image"].astype(generated.dtype) * (1.0 - mask) + generated * mask
