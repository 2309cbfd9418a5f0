"""Pixel fidelity metrics: L1, MSE, PSNR and SSIM, over the whole image or the hole only.

Every function takes NHWC images in [-1, 1] (the batch format of `inpainting.models`) and
returns one value per image, so callers can bootstrap confidence intervals and compare
conditions image by image. All are pure jnp and jit-able.

`mask` is optional everywhere: None means the whole image; a [B, H, W, 1] mask with
1 = hole restricts the metric to the hole (mask-weighted means).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

DATA_RANGE = 2.0  # Images live in [-1, 1].
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _weighted_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Per-image mean of [B, H, W, C] values, weighted by a [B, H, W, 1] mask if given."""
  if mask is None:
    return jnp.mean(values, axis=(1, 2, 3))
  weights = jnp.broadcast_to(mask.astype(values.dtype), values.shape)
  return jnp.sum(values * weights, axis=(1, 2, 3)) / jnp.sum(weights, axis=(1, 2, 3))


def l1(a: jax.Array, b: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean absolute error per image, [B]."""
  return _weighted_mean(jnp.abs(a - b), mask)


def mse(a: jax.Array, b: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean squared error (L2) per image, [B]."""
  return _weighted_mean(jnp.square(a - b), mask)


def psnr(
  a: jax.Array, b: jax.Array, mask: jax.Array | None = None, data_range: float = DATA_RANGE
) -> jax.Array:
  """Peak signal-to-noise ratio in dB per image, [B]; +inf where the images are equal."""
  error = mse(a, b, mask)
  safe = jnp.where(error > 0, error, 1.0)
  return jnp.where(error > 0, 10.0 * jnp.log10(data_range**2 / safe), jnp.inf)


def _gaussian_kernel(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
  kernel = np.exp(-(coords**2) / (2 * sigma**2))
  return (kernel / kernel.sum()).astype(np.float32)


def _blur_matrix(size: int) -> np.ndarray:
  """[size - 10, size]: row i holds the Gaussian window over pixels i..i + 10 (VALID)."""
  kernel = _gaussian_kernel()
  out = np.zeros((size - len(kernel) + 1, size), np.float32)
  for i in range(len(out)):
    out[i, i : i + len(kernel)] = kernel
  return out


def _blur(x: jax.Array) -> jax.Array:
  """Separable Gaussian filter of each channel, VALID: [B, H, W, C] -> [B, H-10, W-10, C].

  Two matrix products with banded window matrices: on 2 CPU cores, every metric of 4 x 64
  images at 64x64 took 0.07 s this way against 1.13 s with XLA's depthwise convolution."""
  rows = jnp.asarray(_blur_matrix(x.shape[1]))
  cols = jnp.asarray(_blur_matrix(x.shape[2]))
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum("ih,bhwc->biwc", rows, x, precision=hp)
  return jnp.einsum("jw,biwc->bijc", cols, x, precision=hp)


def ssim_map(a: jax.Array, b: jax.Array) -> jax.Array:
  """SSIM map averaged over channels, [B, H-10, W-10].

  Standard SSIM (Wang et al. 2004, as tf.image.ssim): Gaussian window 11, sigma 1.5,
  K1 = 0.01, K2 = 0.03, on images rescaled to [0, 1]; VALID filtering, so map entry (i, j)
  is the window centred on pixel (i + 5, j + 5).
  """
  x = (a.astype(jnp.float32) + 1.0) / 2.0
  y = (b.astype(jnp.float32) + 1.0) / 2.0
  c1, c2 = SSIM_K1**2, SSIM_K2**2
  # (Co)variances are shift invariant: centring each image first avoids float32
  # cancellation in E[x^2] - E[x]^2 (exactly 0 for flat regions).
  shift_x = jnp.mean(x, axis=(1, 2), keepdims=True)
  shift_y = jnp.mean(y, axis=(1, 2), keepdims=True)
  x, y = x - shift_x, y - shift_y
  mu_x, mu_y = _blur(x), _blur(y)
  var_x = _blur(x * x) - mu_x**2
  var_y = _blur(y * y) - mu_y**2
  cov = _blur(x * y) - mu_x * mu_y
  mu_x, mu_y = mu_x + shift_x, mu_y + shift_y
  numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
  denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
  return jnp.mean(numerator / denominator, axis=-1)


def ssim(a: jax.Array, b: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean SSIM per image, [B] (1 for identical images).

  With a mask, the SSIM map is averaged over the windows centred on hole pixels. Hole
  pixels closer than 5 px to the image edge have no full window and are left out (the
  centre 32x32 hole is entirely covered).
  """
  values = ssim_map(a, b)
  if mask is None:
    return jnp.mean(values, axis=(1, 2))
  half = SSIM_WINDOW // 2
  centres = mask[:, half:-half, half:-half, 0].astype(values.dtype)
  return jnp.sum(values * centres, axis=(1, 2)) / jnp.sum(centres, axis=(1, 2))


METRICS: dict[str, tuple[Callable[..., jax.Array], bool]] = {
  # name -> (function, higher is better)
  "l1": (l1, False),
  "mse": (mse, False),
  "psnr": (psnr, True),
  "ssim": (ssim, True),
}


def all_metrics(a: jax.Array, b: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
  """Every metric, whole image and hole only: {'l1': [B], 'l1_hole': [B], ...}."""
  out = {}
  for name, (fn, _) in METRICS.items():
    out[name] = fn(a, b)
    out[f"{name}_hole"] = fn(a, b, mask)
  return out


def best_of_k(values: jax.Array, higher_is_better: bool) -> tuple[jax.Array, jax.Array]:
  """Best value over K samples for each image.

  Args:
    values: [K, B] per-sample metric values.
    higher_is_better: True for PSNR/SSIM, False for errors and LPIPS.

  Returns:
    (best value [B], index of the best sample [B]).
  """
  index = jnp.argmax(values, axis=0) if higher_is_better else jnp.argmin(values, axis=0)
  return jnp.take_along_axis(values, index[None], axis=0)[0], index


def best_of_k_metric(
  metric: str | Callable[..., jax.Array],
  samples: jax.Array,
  target: jax.Array,
  mask: jax.Array | None = None,
  higher_is_better: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Scores each of K samples against the target and keeps the best per image.

  Args:
    metric: a name in METRICS or a function (a [B,...], b [B,...], mask) -> [B].
    samples: [K, B, H, W, C] completions.
    target: [B, H, W, C] ground truth.
    mask: optional [B, H, W, 1] hole mask (hole-only metric).
    higher_is_better: needed when `metric` is a function.

  Returns:
    (best value [B], index of the best sample [B]).
  """
  if isinstance(metric, str):
    metric, default = METRICS[metric]
    higher_is_better = default if higher_is_better is None else higher_is_better
  if higher_is_better is None:
    raise ValueError("higher_is_better is required for a custom metric")
  values = jax.vmap(lambda s: metric(s, target, mask))(samples)
  return best_of_k(values, higher_is_better)
