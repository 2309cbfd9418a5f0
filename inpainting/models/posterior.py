"""Diagonal-Gaussian encoders for the latent z (the VAE half of `vaegan`).

As in Pluralistic Image Completion, one network shape serves two roles:
  posterior  q(z | full image, mask, caption): sees the ground truth; used in training.
  prior      p(z | border, mask, caption): sees `masked_input(batch)`; learned through
             KL(q || p) and used at test time, so that K prior draws give K completions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from inpainting.models import layers
from inpainting.models.generator import BOTTLENECK_SIZE, FOLD

# Keeps sigma of z in a numerically safe range.
_LOG_SIGMA_RANGE = (-8.0, 4.0)


class GaussianEncoder(nnx.Module):
  """Space-to-depth to 32 px, a 3x3 conv, stride-2 convs to 4 px, then the condition
  joins and a dense layer gives (mu, log sigma)."""

  def __init__(self, model_config: ml_collections.ConfigDict, *, init: layers.ParamInit):
    dtype = layers.compute_dtype(model_config)
    widths = tuple(model_config.encoder_widths)  # Channels at 32, 16, 8, 4 px.
    if len(widths) != 4:
      raise ValueError(f"model.encoder_widths needs 4 entries (32, 16, 8, 4 px), got {widths}")
    self.dtype = dtype
    self.stem = layers.Conv(4 * FOLD * FOLD, widths[0], 3, init=init, dtype=dtype)
    self.downs = nnx.List(
      [
        layers.Conv(cin, cout, 3, stride=2, init=init, dtype=dtype)
        for cin, cout in zip(widths[:-1], widths[1:])
      ]
    )
    features = BOTTLENECK_SIZE * BOTTLENECK_SIZE * widths[-1]
    hidden = 4 * model_config.z_dim
    self.image_to_hidden = layers.Dense(features, hidden, init=init, dtype=dtype)
    self.cond_to_hidden = layers.Dense(model_config.text.cond_dim, hidden, init=init, dtype=dtype)
    # mu starts as a random projection of the features (sigma 1), so z carries the image
    # from the first step and the generator has a reason to read it.
    self.to_gaussian = layers.gaussian_head(
      hidden, model_config.z_dim, init=init, initial_sigma=1.0
    )

  def __call__(self, x: jax.Array, cond_vector: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes an image.

    Args:
      x: [B, 64, 64, 4] image (full for the posterior, masked for the prior) + mask.
      cond_vector: [B, cond_dim] the caption condition.

    Returns:
      float32 (mu, log_sigma), each [B, z_dim].
    """
    h = nnx.leaky_relu(self.stem(layers.space_to_depth(x.astype(self.dtype), FOLD)), 0.2)
    for down in self.downs:
      h = nnx.leaky_relu(down(h), 0.2)
    h = self.image_to_hidden(h.reshape(h.shape[0], -1))
    h = nnx.leaky_relu(h + self.cond_to_hidden(cond_vector.astype(self.dtype)), 0.2)
    mu, log_sigma = jnp.split(self.to_gaussian(h.astype(jnp.float32)), 2, axis=-1)
    return mu, jnp.clip(log_sigma, *_LOG_SIGMA_RANGE)


def posterior_input(batch) -> jax.Array:
  """What q(z | ...) sees: the full image plus the mask channel."""
  return jnp.concatenate([batch["image"], batch["mask"]], axis=-1)


def reparameterize(mu: jax.Array, log_sigma: jax.Array, key: jax.Array) -> jax.Array:
  """z = mu + sigma * eps, eps ~ N(0, I) drawn from `key`."""
  return mu + jnp.exp(log_sigma) * jax.random.normal(key, mu.shape, mu.dtype)
