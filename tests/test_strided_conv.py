"""Every formulation of the 4x4 stride-2 conv maps equals XLA's, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpainting.models import strided_conv as sc

# (input side, C, A): tiny, odd channel counts, and the 1 px output of pix2pix's innermost.
SHAPES = [(8, 3, 5), (4, 6, 2), (2, 4, 3), (16, 2, 7)]


def _arrays(size, c, a, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(2, size, size, c)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(2, size // 2, size // 2, a)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(4, 4, c, a)), jnp.float32)
  return x, y, w


def _numpy_down(x, w):
  """The definition: out[m, n] = sum over 4x4 taps of the padded input at (2m + i, 2n + j)."""
  x, w = np.asarray(x), np.asarray(w)
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  half = x.shape[1] // 2
  out = np.zeros((x.shape[0], half, half, w.shape[-1]), np.float32)
  for m in range(half):
    for n in range(half):
      out[:, m, n] = np.einsum("bijc,ijca->ba", padded[:, 2 * m : 2 * m + 4, 2 * n : 2 * n + 4], w)
  return out


@pytest.mark.parametrize("shape", SHAPES)
def test_formulations_agree(shape):
  x, y, w = _arrays(*shape)
  np.testing.assert_allclose(sc.down_direct(x, w), _numpy_down(x, w), rtol=1e-4, atol=1e-4)
  for table, args in ((sc.DOWN, (x, w)), (sc.UP, (y, w)), (sc.GRAD_W, (x, y))):
    reference = np.asarray(table["direct"](*args))
    assert np.abs(reference).max() > 0.1
    for name, fn in table.items():
      np.testing.assert_allclose(fn(*args), reference, rtol=1e-4, atol=1e-4, err_msg=name)


def test_up_is_the_adjoint_of_down():
  x, y, w = _arrays(8, 3, 5)
  lhs = jnp.vdot(sc.down(x, w), y)
  rhs = jnp.vdot(x, sc.up(y, w))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


@pytest.mark.parametrize("policy", sc.IMPLS)
@pytest.mark.parametrize("shape", [(8, 3, 5), (32, 64, 4)])
def test_custom_vjp_matches_autodiff(policy, shape):
  """First and second passes of down and up equal XLA autodiff of the direct forms."""
  x, y, w = _arrays(*shape, seed=1)
  probe_x = jnp.cos(x)
  probe_y = jnp.sin(y)

  def loss_down(fn):
    return lambda x, w: jnp.sum(fn(x, w) * probe_y)

  def loss_up(fn):
    return lambda y, w: jnp.sum(fn(y, w) * probe_x)

  cases = (
    (loss_down(lambda x, w: sc.down(x, w, policy)), loss_down(sc.down_direct), (x, w)),
    (loss_up(lambda y, w: sc.up(y, w, policy)), loss_up(sc.up_direct), (y, w)),
  )
  for custom, direct, args in cases:
    got = jax.jit(jax.grad(custom, argnums=(0, 1)))(*args)
    want = jax.grad(direct, argnums=(0, 1))(*args)
    for g, r in zip(got, want):
      np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3 * float(jnp.abs(r).max()))


def test_unknown_policy_is_an_error():
  x, _, w = _arrays(8, 3, 5)
  with pytest.raises(ValueError, match="conv_impl"):
    sc.down(x, w, "fast")
