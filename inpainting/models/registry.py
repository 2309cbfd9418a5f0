"""Model families: the only place the trainer, `evaluate`, `inpaint` and the demo learn
what a model is.

A family is one file in `inpainting/models/` that registers a `Family` under its name
(`config.model.name`). A dotted name ("mypackage.my_family") imports that module instead,
so a family can also live outside this package (the tests' two-caption family does).
Every caller loops over generic dicts and these functions, so adding a family never adds
a branch to them.

The batch a family receives is described by its `BatchSpec` (inpainting/batching.py). The
model sees the image only through `masked_input(batch)` except where it is allowed the
ground truth (the posterior encoder, the losses, the discriminator's real branch).
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from inpainting import batching, images
from inpainting.errors import UserError

Batch = dict[str, jax.Array]
HParams = Any  # A family's frozen (hashable) hyper-parameter dataclass.


def inpainting_grid(batch: dict[str, np.ndarray], samples: np.ndarray, pad: int = 2):
  """One row per example: input with the hole grey | ground truth | K samples (uint8)."""
  truth, mask = batch["image"], batch["mask"]
  columns = [truth * (1 - mask), truth, *list(samples)]
  b, h, w, _ = truth.shape
  grid = np.full((b * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), 255, np.uint8)
  for col, column in enumerate(columns):
    pixels = images.to_uint8(column)
    for row in range(b):
      y, x = pad + row * (h + pad), pad + col * (w + pad)
      grid[y : y + h, x : x + w] = pixels[row]
  return grid


@dataclasses.dataclass(frozen=True)
class Family:
  """Everything task-specific about one model family.

  Attributes:
    hparams: config -> a frozen, hashable dataclass of every value the functions below
      read (loss weights, flags). Built once; passed to every function as `hp`.
    create: (config, rngs) -> nnx.Module holding every trainable part *and* its
      optimizer(s) (nnx.Optimizer). The trainer splits it once with `nnx.split` and
      carries the resulting state through a jitted step.
    train_step: (bundle, batch, rng, hp) -> dict of scalar metrics. Updates the bundle in
      place (NNX style); the trainer wraps it in a pure, donated jit.
    sample: (bundle, batch, rng, num_samples, hp) -> float32 [num_samples, B, ...]
      completions (for image families: [K, B, 64, 64, 3] in [-1, 1], border copied).
    evaluate: (bundle, batch, rng, hp) -> dict of scalars on one held-out batch; the
      trainer's light evaluation averages them over batches (logged as eval/<name>).
    check_config: config -> None; raises UserError (one line) for any model-specific
      mistake, before any work is done.
    batch: which batch fields the family reads (inpainting/batching.py).
    visualize: (host batch, host samples) -> uint8 [H, W, 3] picture of the samples.
    progress_metrics: the few metrics shown on the console line (all go to TensorBoard).
    interpolate: None for a family without a latent; otherwise (bundle, batch, rng,
      weights [F, K], num_samples K, hp) -> [F, B, ...] completions whose latent noise is
      `weights` times the K draws that `sample` makes from the same `rng` (row f mixes
      them for frame f; a row with one 1 gives that sample exactly, unit-norm rows keep a
      Gaussian latent on its prior). The demo's interpolation slider calls it.

  The optional latent tools of `inpainting.explore` (None where a family has no latent z):
    encode_posterior: (bundle, batch, rng, hp) -> float32 [B, z_dim], the mean of the
      posterior q(z | image, mask, caption) with the batch's image read as given, the hole
      included: a partly drawn picture re-encoded under another caption (z-switching).
    complete_from_z: (bundle, batch, rng, z [N, B, z_dim], hp) -> [N, B, ...] completions
      from these latents (not prior noise) under the batch's caption.
    interpolate_caption: (bundle, batch, rng, weights [F], hp) -> [F, B, ...] completions
      whose caption condition moves from the batch's caption (weight 0) to a second one in
      `tokens_b` / `token_mask_b` (weight 1), with one prior noise draw held fixed (the
      first draw `sample` makes from the same rng, so weight 0 gives sample 1 exactly).
  """

  hparams: Callable[[ml_collections.ConfigDict], HParams]
  create: Callable[[ml_collections.ConfigDict, nnx.Rngs], nnx.Module]
  train_step: Callable[[nnx.Module, Batch, jax.Array, HParams], dict[str, Any]]
  sample: Callable[[nnx.Module, Batch, jax.Array, int, HParams], jax.Array]
  evaluate: Callable[[nnx.Module, Batch, jax.Array, HParams], dict[str, Any]]
  check_config: Callable[[ml_collections.ConfigDict], None] = lambda config: None
  batch: batching.BatchSpec = batching.DEFAULT_SPEC
  visualize: Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray] = inpainting_grid
  progress_metrics: tuple[str, ...] = ("loss_g", "loss_d", "l1_hole")
  interpolate: (
    Callable[[nnx.Module, Batch, jax.Array, jax.Array, int, HParams], jax.Array] | None
  ) = None
  encode_posterior: Callable[[nnx.Module, Batch, jax.Array, HParams], jax.Array] | None = None
  complete_from_z: (
    Callable[[nnx.Module, Batch, jax.Array, jax.Array, HParams], jax.Array] | None
  ) = None
  interpolate_caption: (
    Callable[[nnx.Module, Batch, jax.Array, jax.Array, HParams], jax.Array] | None
  ) = None


_FAMILIES: dict[str, Family] = {}
# Module that defines each built-in family; imported lazily so unused models cost nothing.
_MODULES = {
  "vaegan": "inpainting.models.vaegan",
  "l2": "inpainting.models.l2",
  "pix2pix": "inpainting.models.pix2pix",
  "painter": "inpainting.models.painter",
}


def register(name: str, family: Family) -> None:
  _FAMILIES[name] = family


def get(name: str) -> Family:
  """Returns the registered family `name`; UserError (one line) if unknown."""
  if name not in _FAMILIES:
    module = _MODULES.get(name, name if "." in name else None)
    if module is None:
      raise UserError(f"unknown model {name!r}; choose one of {sorted(_MODULES)}")
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as error:
      raise UserError(f"model {name!r}: cannot import {module} ({error})") from None
    if name not in _FAMILIES:
      raise UserError(f"model {name!r}: {module} registers no family of that name")
  return _FAMILIES[name]


def for_config(config: ml_collections.ConfigDict) -> tuple[Family, HParams]:
  """The family of `config` and its hyper-parameters, after the family's config check."""
  family = get(config.model.name)
  family.check_config(config)
  return family, family.hparams(config)


def hparams_from(cls: type, section: ml_collections.ConfigDict, **values: Any) -> HParams:
  """A frozen hyper-parameter dataclass `cls` with each field read from `section` (a config
  block) and cast to the field's type; `values` supply fields that live elsewhere."""
  types = typing.get_type_hints(cls)
  read = {}
  for field in dataclasses.fields(cls):
    if field.name in values:
      continue
    if field.name in section:
      read[field.name] = types[field.name](section[field.name])
    elif field.default is dataclasses.MISSING:  # Runs saved before a knob existed use its default.
      raise KeyError(f"config has no {field.name!r}")
  return cls(**read, **values)


def check_model_config(config: ml_collections.ConfigDict, check: Callable[[Any], Any]) -> None:
  """Runs a validator of `config.model` (ValueError -> one-line UserError)."""
  try:
    check(config.model)
  except ValueError as error:
    raise UserError(str(error)) from None


# --- Helpers shared by the image-completion families ----------------------------------------


def masked_input(batch: Batch) -> jax.Array:
  """Border pixels plus the mask channel: [B, H, W, 4]; the hole is zeroed."""
  known = batch["image"] * (1.0 - batch["mask"])
  return jnp.concatenate([known, batch["mask"]], axis=-1)


def tile_samples(x: jax.Array, num_samples: int) -> jax.Array:
  """[B, ...] -> [num_samples * B, ...] (sample-major): one copy per sample."""
  return jnp.broadcast_to(x, (num_samples, *x.shape)).reshape(-1, *x.shape[1:])


def composite(generated: jax.Array, batch: Batch) -> jax.Array:
  """Copies the known border from the input; only the hole comes from the model."""
  mask = batch["mask"].astype(generated.dtype)
  return batch["image"].astype(generated.dtype) * (1.0 - mask) + generated * mask


def hole_psnr(completed: jax.Array, batch: Batch) -> jax.Array:
  """Mean PSNR (dB, images in [-1, 1]) over the hole pixels of each example."""
  mask = batch["mask"]
  hole = jnp.maximum(mask.sum(axis=(1, 2, 3)) * completed.shape[-1], 1.0)
  mse = (((completed - batch["image"]) ** 2) * mask).sum(axis=(1, 2, 3)) / hole
  return jnp.mean(10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10)))


def drop_captions(batch: Batch, rng: jax.Array, rate: float) -> Batch:
  """The batch with each example's caption replaced by the empty one (all padding, the
  evaluation's `empty` condition) with probability `rate`: classifier-free-guidance-style
  caption dropout, so that the model also learns p(hole | border) alone."""
  if rate <= 0:
    return batch
  keep = jax.random.bernoulli(rng, 1.0 - rate, (batch["tokens"].shape[0], 1))
  return {
    **batch,
    "tokens": jnp.where(keep, batch["tokens"], 0),
    "token_mask": batch["token_mask"] & keep,
  }
