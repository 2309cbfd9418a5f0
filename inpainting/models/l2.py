"""`l2`: context-encoder-style regression baseline (no latent, no discriminator).

The same caption encoder, FiLM/cross-attention U-Net and compositing as `vaegan`, trained
only to regress the hole: l2_weight * L2 + l1_weight * L1 (both hole-weighted), plus the
conditioning-augmentation KL when captions are on. `model.use_caption=False` replaces the
caption by the all-zero condition (the no-text ablation). Regression to the mean gives
one blurry answer, so sample() returns the same completion K times.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from inpainting import batching, losses
from inpainting.models import layers, registry
from inpainting.models.generator import CaptionUNet, check_cond_map
from inpainting.models.registry import Batch, composite, masked_input
from inpainting.models.text_encoder import CaptionConditioner, Condition, null_condition


@dataclasses.dataclass(frozen=True)
class L2HParams:
  """The loss settings every function reads (config.loss; see configs/l2.py)."""

  hole_weight: float
  valid_weight: float
  l1_weight: float
  l2_weight: float
  cond_kl_weight: float


def hparams(config: ml_collections.ConfigDict) -> L2HParams:
  return registry.hparams_from(L2HParams, config.loss)


def _check_no_latent(model_config: ml_collections.ConfigDict) -> None:
  if model_config.z_dim:
    raise ValueError("the l2 model has no latent: set model.z_dim=0")


def check_config(config: ml_collections.ConfigDict) -> None:
  registry.check_model_config(config, layers.compute_dtype)
  registry.check_model_config(config, _check_no_latent)
  registry.check_model_config(config, check_cond_map)


class L2Model(nnx.Module):
  """Optional caption conditioner, the U-Net and one Adam optimizer."""

  def __init__(self, config: ml_collections.ConfigDict, rngs: nnx.Rngs):
    model = config.model
    dtype = layers.compute_dtype(model)
    init = layers.ParamInit(rngs)
    self.use_caption = bool(model.use_caption)
    self.text = (
      CaptionConditioner(model, config.data.max_caption_length, init=init, dtype=dtype)
      if self.use_caption
      else None
    )
    self.generator = CaptionUNet(model, init=init)
    init.finish()
    tx = layers.adam(config.optim, config.optim.learning_rate, config.num_train_steps)
    self.opt = nnx.Optimizer(self.trainable_parts(), tx, wrt=nnx.Param)
    # Shape of the all-zero condition used without captions (structure, not a loss knob).
    self.cond_dim = int(model.text.cond_dim)
    self.text_width = int(model.text.width)

  def trainable_parts(self) -> tuple[nnx.Module, ...]:
    return (self.text, self.generator) if self.use_caption else (self.generator,)

  def condition(self, batch: Batch, key: jax.Array | None) -> Condition:
    """The caption condition (c sampled when `key` is given), or zeros without captions."""
    if self.text is None:
      batch_size, length = batch["tokens"].shape
      return null_condition(batch_size, length, self.cond_dim, self.text_width)
    return self.text(batch["tokens"], batch["token_mask"], key, batch.get("segments"))


def create(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> L2Model:
  return L2Model(config, rngs)


def regression_losses(hp, raw: jax.Array, batch: Batch) -> dict[str, jax.Array]:
  """Hole-weighted L2 and L1 of a raw output (hp: hole_weight, valid_weight); painter too."""
  args = (raw, batch["image"], batch["mask"], hp.hole_weight, hp.valid_weight)
  return {"loss_l2": losses.hole_weighted_l2(*args), "loss_l1": losses.hole_weighted_l1(*args)}


def train_step(bundle: L2Model, batch: Batch, rng: jax.Array, hp: L2HParams) -> dict:
  """One Adam step on the regression loss; mutates the bundle, returns scalar metrics."""

  def loss_fn(parts):
    generator = parts[-1]
    if bundle.use_caption:  # Conditioning augmentation draws c from rng.
      cond = parts[0](batch["tokens"], batch["token_mask"], rng)
    else:
      cond = bundle.condition(batch, None)
    raw = generator(masked_input(batch), cond)
    terms = regression_losses(hp, raw, batch)
    terms["kl_cond"] = losses.standard_normal_kl(cond.mu, cond.log_sigma)
    total = (
      hp.l2_weight * terms["loss_l2"]
      + hp.l1_weight * terms["loss_l1"]
      + hp.cond_kl_weight * terms["kl_cond"]
    )
    terms["l1_hole"] = losses.masked_l1(raw, batch["image"], batch["mask"])
    return total, terms

  parts = bundle.trainable_parts()
  (loss, metrics), grads = nnx.value_and_grad(
    loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True
  )(parts)
  bundle.opt.update(parts, grads)
  return {
    "loss": loss,
    **metrics,
    "grad_norm_g": optax.tree.norm(grads),
    "learning_rate": layers.learning_rate(bundle.opt),
  }


def _predict(bundle: L2Model, batch: Batch) -> jax.Array:
  return bundle.generator(masked_input(batch), bundle.condition(batch, None))


def sample(
  bundle: L2Model, batch: Batch, rng: jax.Array, num_samples: int, hp: L2HParams
) -> jax.Array:
  """The single deterministic completion (condition = mu), repeated K times."""
  del rng  # Deterministic.
  out = composite(_predict(bundle, batch), batch).astype(jnp.float32)
  return jnp.broadcast_to(out, (num_samples, *out.shape))


def evaluate(bundle: L2Model, batch: Batch, rng: jax.Array, hp: L2HParams) -> dict:
  """Held-out regression losses, hole L1 and hole PSNR of the (deterministic) prediction."""
  del rng  # Deterministic.
  raw = _predict(bundle, batch)
  terms = regression_losses(hp, raw, batch)
  terms["loss"] = hp.l2_weight * terms["loss_l2"] + hp.l1_weight * terms["loss_l1"]
  terms["l1_hole"] = losses.masked_l1(raw, batch["image"], batch["mask"])
  terms["psnr_hole"] = registry.hole_psnr(composite(raw, batch), batch)
  return terms


registry.register(
  "l2",
  registry.Family(
    hparams=hparams,
    create=create,
    train_step=train_step,
    sample=sample,
    evaluate=evaluate,
    check_config=check_config,
    progress_metrics=("loss", "l1_hole"),
    # Each token's part number, for `model.text.num_segments` (all 0 for one caption).
    batch=batching.BatchSpec(device_keys=(*batching.CAPTION_KEYS, "segments")),
  ),
)
