"""Loss functions on hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpainting import losses


def test_kl_of_identical_gaussians_is_zero():
  mu = jnp.array([[0.3, -1.2, 2.0]])
  log_sigma = jnp.array([[0.1, -0.5, 0.7]])
  assert float(losses.gaussian_kl(mu, log_sigma, mu, log_sigma)) == pytest.approx(0.0, abs=1e-6)


def test_kl_known_values():
  # KL(N(1, 1) || N(0, 1)) = 0.5 per dimension, summed over 2 dims.
  assert float(losses.standard_normal_kl(jnp.ones((1, 2)), jnp.zeros((1, 2)))) == pytest.approx(1.0)
  # KL(N(0, s1^2) || N(0, s2^2)) = log(s2 / s1) + s1^2 / (2 s2^2) - 1/2.
  s1, s2 = 0.5, 2.0
  expected = np.log(s2 / s1) + s1**2 / (2 * s2**2) - 0.5
  got = losses.gaussian_kl(
    jnp.zeros((1, 1)),
    jnp.log(jnp.full((1, 1), s1)),
    jnp.zeros((1, 1)),
    jnp.log(jnp.full((1, 1), s2)),
  )
  assert float(got) == pytest.approx(expected, rel=1e-5)
  # Averaged over the batch: two examples with KL 0 and 1 give 0.5.
  mu = jnp.array([[0.0, 0.0], [1.0, 1.0]])
  assert float(losses.standard_normal_kl(mu, jnp.zeros((2, 2)))) == pytest.approx(0.5)


def test_kl_general_case_matches_numpy_closed_form():
  # All four parameters arbitrary (sigma_p != 1, mu_q != mu_p), per dimension:
  # KL = log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2,
  # summed over dimensions and averaged over the batch, in float64 numpy.
  rng = np.random.default_rng(3)
  shape = (4, 5)
  mu_q, mu_p = rng.normal(0.0, 1.5, shape), rng.normal(0.0, 1.5, shape)
  sigma_q, sigma_p = rng.uniform(0.3, 2.5, shape), rng.uniform(0.3, 2.5, shape)
  per_dim = np.log(sigma_p / sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2 * sigma_p**2) - 0.5
  expected = per_dim.sum(axis=-1).mean()
  args = [jnp.asarray(a, jnp.float32) for a in (mu_q, np.log(sigma_q), mu_p, np.log(sigma_p))]
  assert float(losses.gaussian_kl(*args)) == pytest.approx(expected, rel=1e-5)
  # A single dimension with round numbers: N(1, 0.5^2) || N(-1, 2^2)
  # = log 4 + (0.25 + 4) / 8 - 0.5.
  got = losses.gaussian_kl(
    jnp.array([[1.0]]),
    jnp.log(jnp.array([[0.5]])),
    jnp.array([[-1.0]]),
    jnp.log(jnp.array([[2.0]])),
  )
  assert float(got) == pytest.approx(np.log(4.0) + 4.25 / 8 - 0.5, rel=1e-6)


def test_kl_agrees_with_a_monte_carlo_estimate():
  # E_q[log q(z) - log p(z)] with z ~ q, independent of the closed form.
  rng = np.random.default_rng(4)
  mu_q, log_sigma_q = np.array([0.7, -1.1]), np.log(np.array([0.6, 1.8]))
  mu_p, log_sigma_p = np.array([-0.4, 0.5]), np.log(np.array([1.7, 0.9]))
  z = mu_q + np.exp(log_sigma_q) * rng.standard_normal((400_000, 2))

  def log_density(x, mu, log_sigma):
    return -0.5 * ((x - mu) / np.exp(log_sigma)) ** 2 - log_sigma - 0.5 * np.log(2 * np.pi)

  samples = (log_density(z, mu_q, log_sigma_q) - log_density(z, mu_p, log_sigma_p)).sum(-1)
  estimate, error = samples.mean(), samples.std() / np.sqrt(len(samples))
  got = float(
    losses.gaussian_kl(
      *[jnp.asarray(a[None], jnp.float32) for a in (mu_q, log_sigma_q, mu_p, log_sigma_p)]
    )
  )
  assert abs(got - estimate) < 5 * error


def test_hinge_losses_at_known_logits():
  logits = jnp.array([2.0, 0.0, -1.0])
  assert float(losses.hinge_d_real(logits)) == pytest.approx(1.0)  # mean(0, 1, 2)
  assert float(losses.hinge_d_fake(logits)) == pytest.approx(4.0 / 3.0)  # mean(3, 1, 0)
  assert float(losses.hinge_g(logits)) == pytest.approx(-1.0 / 3.0)


def test_nonsaturating_and_bce():
  zero = jnp.zeros((2, 3))
  assert float(losses.nonsaturating_d_real(zero)) == pytest.approx(np.log(2.0))
  assert float(losses.nonsaturating_d_fake(zero)) == pytest.approx(np.log(2.0))
  assert float(losses.nonsaturating_g(zero)) == pytest.approx(np.log(2.0))
  logits = jnp.array([-3.0, -0.5, 0.0, 2.0, 8.0])
  sig = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
  for target in (0.0, 1.0):
    expected = -np.mean(target * np.log(sig) + (1 - target) * np.log(1 - sig))
    assert float(losses.bce_with_logits(logits, target)) == pytest.approx(expected, rel=1e-5)
  # BCE against 1 is the non-saturating G loss.
  assert float(losses.bce_with_logits(logits, 1.0)) == pytest.approx(
    float(losses.nonsaturating_g(logits)), rel=1e-6
  )


def test_gan_losses_by_name():
  assert losses.gan_losses("hinge")[2] is losses.hinge_g
  with pytest.raises(ValueError, match="gan_loss"):
    losses.gan_losses("wasserstein")


def _hole_setup():
  mask = np.zeros((1, 4, 4, 1), np.float32)
  mask[:, 1:3, 1:3] = 1  # 4 hole pixels, 12 border pixels.
  target = np.zeros((1, 4, 4, 3), np.float32)
  output = target + np.where(mask > 0, 1.0, 2.0).astype(np.float32)  # error 1 in, 2 out
  return output, target, mask


def test_hole_weighted_l1_and_l2():
  output, target, mask = _hole_setup()
  # Mean over 16 pixels x 3 channels of weight * error.
  l1 = losses.hole_weighted_l1(output, target, mask, hole_weight=6.0, valid_weight=0.5)
  assert float(l1) == pytest.approx((4 * 6.0 * 1.0 + 12 * 0.5 * 2.0) / 16)
  l2 = losses.hole_weighted_l2(output, target, mask, hole_weight=6.0, valid_weight=0.5)
  assert float(l2) == pytest.approx((4 * 6.0 * 1.0 + 12 * 0.5 * 4.0) / 16)
  # Border weight 0: only the hole counts.
  assert float(losses.hole_weighted_l1(output, target, mask, 1.0, 0.0)) == pytest.approx(4 / 16)
  # masked_l1 is the mean error over hole pixels only.
  assert float(losses.masked_l1(output, target, mask)) == pytest.approx(1.0)


def test_feature_matching():
  real = [jnp.ones((2, 4, 4, 3)), jnp.zeros((2, 2, 2, 5))]
  assert float(losses.feature_matching(real, real)) == 0.0
  fake = [f + 1.0 for f in real]
  assert float(losses.feature_matching(fake, real)) == pytest.approx(1.0)
  # No gradient flows into the real branch.
  grad_real = jax.grad(lambda r: losses.feature_matching(fake, r))(real)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in grad_real)


def test_prior_fit_kl_moves_only_the_prior():
  mu_q, log_sigma_q = jnp.array([[0.5, -1.0]]), jnp.array([[0.1, -0.3]])
  mu_p, log_sigma_p = jnp.array([[0.0, 0.2]]), jnp.array([[0.4, 0.0]])
  args = (mu_q, log_sigma_q, mu_p, log_sigma_p)
  np.testing.assert_allclose(losses.prior_fit_kl(*args), losses.gaussian_kl(*args), rtol=1e-6)
  grads = jax.grad(lambda *a: losses.prior_fit_kl(*a), argnums=(0, 1, 2, 3))(*args)
  assert np.all(np.asarray(grads[0]) == 0) and np.all(np.asarray(grads[1]) == 0)
  assert np.all(np.asarray(grads[2]) != 0) and np.all(np.asarray(grads[3]) != 0)
  full = jax.grad(lambda *a: losses.gaussian_kl(*a), argnums=(2, 3))(*args)
  np.testing.assert_allclose(grads[2], full[0], rtol=1e-6)  # The prior's side unchanged.


def test_hole_patch_weights_are_each_patch_share_of_hole_pixels():
  mask = np.zeros((2, 64, 64, 1), np.float32)
  mask[0, 16:48, 16:48] = 1  # The centre hole: exactly the middle 4x4 of 8x8 patches.
  mask[1, 4:12, 0:20] = 1  # A box across patch edges.
  weights = np.asarray(losses.hole_patch_weights(jnp.asarray(mask), (8, 8)))
  expected = np.zeros((8, 8))
  expected[2:6, 2:6] = 1
  np.testing.assert_array_equal(weights[0], expected)
  assert weights[1, 0, 0] == 0.5 and weights[1, 1, 2] == 0.5 * 0.5  # Rows 4-7 / 8-11; cols 16-19.
  assert weights[1].sum() * 64 == mask[1].sum()


@pytest.mark.parametrize("name", sorted(losses.GAN_LOSSES))
def test_weighted_gan_losses_ignore_zero_weight_patches(name):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 8, 8)).astype(np.float32)
  weights = np.zeros((3, 8, 8), np.float32)
  weights[:, 2:6, 2:6] = 1
  changed = logits.copy()
  changed[:, 0] += 5.0  # Only border patches move.
  for loss in losses.gan_losses(name):
    hole = float(loss(jnp.asarray(logits), jnp.asarray(weights)))
    assert float(loss(jnp.asarray(changed), jnp.asarray(weights))) == pytest.approx(hole)
    inner = jnp.asarray(logits[:, 2:6, 2:6])
    assert hole == pytest.approx(float(loss(inner)), rel=1e-6)  # The hole patches' mean.
    assert float(loss(jnp.asarray(changed))) != pytest.approx(float(loss(jnp.asarray(logits))))
