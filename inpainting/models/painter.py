"""`painter`: a completion after every turn of a conversation, with state carried across
turns (after the Neural Painter's GRU reader and recurrent generator).

The text is a conversation (`data.text_source` dialogue, dialogue:any, turns, ...): part 0
is the context caption, part t the t-th question and answer (`batch["segments"]`). Each
part is read by the caption encoder on its own, so no word sees a later turn. Then, for
s = 0 .. num_parts - 1:

  reader   h_s = GRU(h_{s-1}, mean word feature of part s)
  painter  canvas_s = U-Net(border with canvas_{s-1} in the hole, mask;
                            FiLM from h_s; cross-attention to the words of parts 0..s)

A later part that is absent (a shorter conversation) leaves h and the canvas as they were
(part 0 is always painted, from the border alone if there is no text), so the
completion of the first t turns is exactly canvas_t of the whole conversation
(`canvases`; tests/test_painter.py checks this). canvas_{-1} is the empty hole that every
family sees. Turns past num_parts - 1 are read as part of the last one.

Training has a target for the final image only, as in the Neural Painter: hole-weighted
L1 / L2 on the canvas after the last part present. With `data.text_source=dialogue:any`
each example stops after a random number of turns, so the canvases of partial
conversations learn to predict the whole picture from what has been said. Earlier
canvases enter the next part through stop_gradient (the reader's GRU still gets the
gradient through every part): a step costs one U-Net backward pass plus num_parts
forwards.

With `model.z_dim` > 0 each part's U-Net also reads a latent z, as in vaegan: a prior
p(z | border with canvas_{s-1}, h_s) at every part, and in training a posterior
q(z | whole image, h of the last part) that gives the last part's z, with
`loss.kl_weight` * KL(q || p), each dimension's KL floored at `loss.kl_free_bits` nats,
plus `loss.prior_fit_weight` * KL(stop_gradient(q) || p), which moves only the prior.
Earlier parts use z = mu_p + sigma_p * eps with one eps for the whole conversation, as
sampling does, so K draws of eps give K rollouts. With z_dim = 0 sample() returns the same
completion K times.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from inpainting import batching, losses
from inpainting.models import l2, layers, registry
from inpainting.models.generator import CaptionUNet, check_cond_map
from inpainting.models.posterior import GaussianEncoder, posterior_input, reparameterize
from inpainting.models.registry import Batch, composite, masked_input
from inpainting.models.text_encoder import CaptionEncoder, Condition


@dataclasses.dataclass(frozen=True)
class PainterHParams:
  """The loss settings every function reads (config.loss; see configs/painter.py)."""

  hole_weight: float
  valid_weight: float
  l1_weight: float
  l2_weight: float
  kl_weight: float = 0.0  # Runs saved before the latent existed have none.
  kl_free_bits: float = 0.0
  prior_fit_weight: float = 0.0


def hparams(config: ml_collections.ConfigDict) -> PainterHParams:
  return registry.hparams_from(PainterHParams, config.loss)


def _check_model(model_config: ml_collections.ConfigDict) -> None:
  if model_config.z_dim < 0:
    raise ValueError(f"model.z_dim must be >= 0, got {model_config.z_dim}")
  if model_config.z_dim and "encoder_widths" not in model_config:
    raise ValueError("a painter with a latent (model.z_dim > 0) needs model.encoder_widths")
  if model_config.num_parts < 1:
    raise ValueError(f"model.num_parts must be >= 1, got {model_config.num_parts}")


def _check_text_source(config: ml_collections.ConfigDict) -> None:
  if not batching.reads_conversation(config.data):
    raise ValueError(
      f"the painter reads a conversation: data.text_source="
      f"{batching.text_source_of(config.data)!r} is one caption (use dialogue or dialogue:any)"
    )


def check_config(config: ml_collections.ConfigDict) -> None:
  registry.check_model_config(config, layers.compute_dtype)
  registry.check_model_config(config, _check_model)
  registry.check_model_config(config, check_cond_map)
  registry.check_model_config(config, lambda _: _check_text_source(config))


class ConversationPainter(nnx.Module):
  """Per-part caption encoder, GRU reader, U-Net painter, with z_dim > 0 a posterior and
  a prior over z, and one Adam optimizer."""

  def __init__(self, config: ml_collections.ConfigDict, rngs: nnx.Rngs):
    model = config.model
    dtype = layers.compute_dtype(model)
    init = layers.ParamInit(rngs)
    width = model.text.width
    self.num_parts = int(model.num_parts)
    self.z_dim = int(model.z_dim)
    self.text = CaptionEncoder(
      model.text, model.vocab_size, config.data.max_caption_length, init=init, dtype=dtype
    )
    self.reader = nnx.GRUCell(width, model.reader_width, rngs=rngs)
    self.to_condition = layers.Dense(model.reader_width, model.text.cond_dim, init=init)
    self.generator = CaptionUNet(model, init=init)
    # [posterior q(z | image, h), prior p(z | border and canvas, h)], or None.
    self.latent = (
      nnx.List([GaussianEncoder(model, init=init) for _ in range(2)]) if model.z_dim else None
    )
    init.finish()
    tx = layers.adam(config.optim, config.optim.learning_rate, config.num_train_steps)
    self.opt = nnx.Optimizer(self.trainable_parts(), tx, wrt=nnx.Param)

  def trainable_parts(self) -> tuple[nnx.Module, ...]:
    """(text, reader, to_condition, generator[, [posterior, prior]])."""
    parts = (self.text, self.reader, self.to_condition, self.generator)
    return parts if self.latent is None else (*parts, self.latent)


def create(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> ConversationPainter:
  return ConversationPainter(config, rngs)


def _read_parts(parts, batch: Batch, num_parts: int):
  """(words [B, L, W], part of each token [B, L], conditions [P, B, cond_dim],
  present [P, B]): every part encoded on its own, then the GRU over the parts."""
  text, reader, to_condition = parts[:3]
  tokens, token_mask = batch["tokens"], batch["token_mask"]
  part = jnp.minimum(batch["segments"], num_parts - 1)
  in_part = token_mask[None] & (part[None] == jnp.arange(num_parts)[:, None, None])  # [P,B,L]
  batch_size, length = tokens.shape
  words, sentence = text(
    jnp.broadcast_to(tokens, (num_parts, batch_size, length)).reshape(-1, length),
    in_part.reshape(-1, length),
  )
  words = words.reshape(num_parts, batch_size, length, -1)
  # Each token keeps the features computed with its own part.
  words = jnp.sum(jnp.where(in_part[..., None], words, 0), axis=0)
  sentence = sentence.reshape(num_parts, batch_size, -1)
  # Part 0 is always painted, with no text too: the border alone then gives a completion.
  present = jnp.any(in_part, axis=-1).at[0].set(True)

  h = jnp.zeros((batch_size, reader.hidden_features), jnp.float32)
  conditions = []
  for s in range(num_parts):
    h_next, _ = reader(h, sentence[s])
    h = jnp.where(present[s][:, None], h_next, h)
    conditions.append(to_condition(h))
  return words, part, jnp.stack(conditions), present


def _paint(parts, batch: Batch, num_parts: int, eps=None, posterior_key=None) -> dict:
  """Raw canvases [P, B, 64, 64, 3], part by part.

  With a latent, part s reads z = mu_p + sigma_p * eps (eps [B, z_dim]; None = 0, the prior
  means). Given `posterior_key` (training), the last part present reads z ~ q instead,
  earlier canvases are not differentiated through, and the KL(q || p) of that part is
  returned too.
  """
  generator = parts[3]
  latent = parts[4] if len(parts) > 4 else None
  train = posterior_key is not None
  words, part, conditions, present = _read_parts(parts, batch, num_parts)
  # The last part present: its canvas is the completion (and the training target's).
  later = jnp.flip(jnp.cumsum(jnp.flip(present, 0), 0), 0) - present  # Parts present after s.
  last = present & (later == 0)
  hole = batch["mask"]
  known = masked_input(batch)
  out = {}

  def at_last(values: jax.Array) -> jax.Array:
    """[P, B, D] -> [B, D]: each example's value at its last part present."""
    return jnp.sum(jnp.where(last[..., None], values, 0), axis=0)

  if latent is not None and train:
    mu_q, log_sigma_q = latent[0](posterior_input(batch), at_last(conditions))
    z_q = reparameterize(mu_q, log_sigma_q, posterior_key)
    out["mu_q"], out["log_sigma_q"] = mu_q, log_sigma_q
  canvas = jnp.zeros_like(batch["image"])  # The empty hole, as in `masked_input`.
  painted_canvases, priors = [], []
  for s in range(num_parts):
    previous = jax.lax.stop_gradient(canvas) if train else canvas
    x = known.at[..., :3].add(previous * hole)
    said = batch["token_mask"] & (part <= s)
    cond = Condition(conditions[s], words, said, conditions[s], jnp.zeros_like(conditions[s]))
    z = None
    if latent is not None:
      mu_p, log_sigma_p = latent[1](x, conditions[s])
      z = mu_p if eps is None else mu_p + jnp.exp(log_sigma_p) * eps
      if train:
        z = jnp.where(last[s][:, None], z_q, z)
        priors.append((mu_p, log_sigma_p))
    painted = generator(x, cond, z)
    canvas = jnp.where(present[s][:, None, None, None], painted, canvas)
    painted_canvases.append(canvas)
  if priors:  # The prior that the last part's z ~ q is charged against.
    out["mu_p"], out["log_sigma_p"] = (at_last(jnp.stack(v)) for v in zip(*priors))
  out["raw"] = jnp.stack(painted_canvases)
  return out


def canvases(bundle: ConversationPainter, batch: Batch, eps=None) -> jax.Array:
  """float32 [num_parts, B, 64, 64, 3]: the completion after each part (border copied),
  for latent noise eps [B, z_dim] (None: the prior means)."""
  raw = _paint(bundle.trainable_parts(), batch, bundle.num_parts, eps)["raw"]
  return jax.vmap(lambda r: composite(r, batch))(raw).astype(jnp.float32)


def _losses(hp: PainterHParams, raw: jax.Array, batch: Batch) -> dict[str, jax.Array]:
  terms = l2.regression_losses(hp, raw, batch)
  terms["loss"] = hp.l2_weight * terms["loss_l2"] + hp.l1_weight * terms["loss_l1"]
  terms["l1_hole"] = losses.masked_l1(raw, batch["image"], batch["mask"])
  return terms


def train_step(bundle: ConversationPainter, batch: Batch, rng: jax.Array, hp: PainterHParams):
  """One Adam step on the final canvas's regression loss (+ the KL with a latent); returns
  scalar metrics."""
  num_parts = bundle.num_parts
  key_eps, key_q = jax.random.split(rng)

  def loss_fn(parts):
    eps = None
    if bundle.z_dim:
      eps = jax.random.normal(key_eps, (batch["image"].shape[0], bundle.z_dim))
    out = _paint(parts, batch, num_parts, eps, posterior_key=key_q)
    terms = _losses(hp, out["raw"][-1], batch)
    if "mu_q" in out:
      gaussians = (out["mu_q"], out["log_sigma_q"], out["mu_p"], out["log_sigma_p"])
      terms["kl_z"], kl_term, terms["loss_prior_fit"] = losses.latent_kl_terms(
        gaussians, hp.kl_free_bits, hp.prior_fit_weight > 0
      )
      terms["loss"] = (
        terms["loss"] + hp.kl_weight * kl_term + hp.prior_fit_weight * terms["loss_prior_fit"]
      )
    return terms["loss"], terms

  parts = bundle.trainable_parts()
  (_, metrics), grads = nnx.value_and_grad(
    loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True
  )(parts)
  bundle.opt.update(parts, grads)
  return {
    **metrics,
    "grad_norm_g": optax.tree.norm(grads),
    "learning_rate": layers.learning_rate(bundle.opt),
  }


def sample(
  bundle: ConversationPainter, batch: Batch, rng: jax.Array, num_samples: int, hp: PainterHParams
) -> jax.Array:
  """K completions after the last part present: K rollouts with prior noise drawn from
  `rng` (with no latent, one completion repeated K times)."""
  del hp
  if bundle.latent is None:
    final = canvases(bundle, batch)[-1]
    return jnp.broadcast_to(final, (num_samples, *final.shape))
  size = batch["image"].shape[0]
  eps = jax.random.normal(rng, (num_samples * size, bundle.z_dim))
  tiled = jax.tree.map(lambda x: registry.tile_samples(x, num_samples), batch)
  final = canvases(bundle, tiled, eps)[-1]
  return final.reshape(num_samples, size, *final.shape[1:])


def evaluate(bundle: ConversationPainter, batch: Batch, rng: jax.Array, hp: PainterHParams):
  """Held-out losses, hole L1 and hole PSNR of the final canvas (prior means)."""
  del rng
  raw = _paint(bundle.trainable_parts(), batch, bundle.num_parts)["raw"][-1]
  terms = _losses(hp, raw, batch)
  terms["psnr_hole"] = registry.hole_psnr(composite(raw, batch), batch)
  return terms


registry.register(
  "painter",
  registry.Family(
    hparams=hparams,
    create=create,
    train_step=train_step,
    sample=sample,
    evaluate=evaluate,
    check_config=check_config,
    batch=batching.BatchSpec(device_keys=(*batching.CAPTION_KEYS, "segments")),
    progress_metrics=("loss", "l1_hole"),
  ),
)
