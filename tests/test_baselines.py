"""Mean-colour and harmonic fill baselines."""

import numpy as np

from inpainting import baselines


def _mask(batch):
  mask = np.zeros((batch, 64, 64, 1), np.float32)
  mask[:, 16:48, 16:48] = 1.0
  return mask


def test_harmonic_fill_reproduces_a_linear_ramp():
  yy, xx = np.mgrid[0:64, 0:64].astype(np.float64)
  ramp = np.stack([0.01 * xx - 0.3, -0.02 * yy + 0.6, 0.005 * (xx + yy) - 0.3], axis=-1)
  images = np.stack([ramp, -ramp]).astype(np.float32)
  mask = _mask(2)
  garbage = images * (1 - mask) + 0.9 * mask  # The fill must not read the hole.
  filled = baselines.harmonic_fill(garbage, mask)
  assert filled.shape == images.shape and filled.dtype == np.float32
  np.testing.assert_allclose(filled, images, atol=1e-4)


def test_harmonic_fill_is_harmonic_and_keeps_the_border():
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  mask = _mask(2)
  filled = baselines.harmonic_fill(images, mask).astype(np.float64)
  np.testing.assert_array_equal(filled[:, :16], images[:, :16])
  # Each hole pixel equals the mean of its 4 neighbours (discrete Laplace equation).
  neighbours = (
    filled[:, 15:47, 16:48]
    + filled[:, 17:49, 16:48]
    + filled[:, 16:48, 15:47]
    + filled[:, 16:48, 17:49]
  ) / 4
  np.testing.assert_allclose(filled[:, 16:48, 16:48], neighbours, atol=1e-5)
  # Maximum principle: the fill stays within the border's range.
  assert filled.max() <= images.max() + 1e-6 and filled.min() >= images.min() - 1e-6


def test_mean_fill_uses_the_border_mean():
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
  mask = _mask(3)
  filled = baselines.mean_fill(images, mask)
  border = mask[..., 0] == 0
  for b in range(3):
    expected = images[b][border[b]].mean(axis=0)
    np.testing.assert_allclose(
      filled[b, 16:48, 16:48], np.broadcast_to(expected, (32, 32, 3)), atol=1e-6
    )
    np.testing.assert_array_equal(filled[b][border[b]], images[b][border[b]])
