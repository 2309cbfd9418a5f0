"""The family contract's promises, checked with non-zero weights.

  * no hole leakage, for every registered family: a completion never depends on the pixels
    it is asked to fill (and does depend on the border: the positive control);
  * the caption is used (vaegan, l2) and ignored when switched off (l2 use_caption=False);
  * a GAN step (vaegan, pix2pix) updates D first, then G against the *updated* D, and G's
    loss never moves D;
  * the vaegan loss branches the default config never runs; pix2pix's sample dropout.

Freshly initialised models would make several of these vacuous: the FiLM, cross-attention
and conditioning-augmentation output layers start at zero, so at initialisation the caption
has no effect at all. Sampling tests therefore perturb every parameter first (`randomized`).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inpainting.models import gan, registry
from tests.test_models import built, fast_jit, make_batch

KEY = jax.random.key(5)
# Families with a tiny config in tests.test_models.built. A family added to the registry
# must get one there, or the leakage test fails for it.
TINY = ("vaegan", "l2", "pix2pix", "painter")


def _flat(state) -> dict[str, np.ndarray]:
  """{"['part']['layer']['name']": array} for every leaf of an nnx state."""
  return {
    jax.tree_util.keystr(path).removesuffix(".value"): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(state)
  }


def randomized(state, seed: int = 0, scale: float = 0.05):
  """`state` with every float variable outside the optimizers (parameters, moving averages,
  running statistics) moved by N(0, scale^2): no layer outputs zeros any more."""

  def perturb(state):
    paths, treedef = jax.tree_util.tree_flatten_with_path(state)
    keys = jax.random.split(jax.random.key(seed), len(paths))
    moved = [
      x
      if jax.tree_util.keystr(path).startswith("['opt") or not jnp.issubdtype(x.dtype, jnp.floating)
      else x + scale * jax.random.normal(k, x.shape, x.dtype)
      for (path, x), k in zip(paths, keys)
    ]
    return jax.tree.unflatten(treedef, moved)

  return fast_jit(perturb, state)(state)


def sampler(name: str, num_samples: int = 2, **hparams):
  """(sample(state, batch, rng) -> numpy [K, B, 64, 64, 3], randomised state) for the tiny
  config `name` of tests.test_models.built; `hparams` override the family's hparams."""
  config, family, graphdef, state = built(name)
  hp = dataclasses.replace(family.hparams(config), **hparams)

  def sample(state, batch, rng):
    return family.sample(nnx.merge(graphdef, state), batch, rng, num_samples, hp)

  compiled = fast_jit(sample, state, make_batch(), KEY)
  return (lambda *args: np.asarray(compiled(*args))), randomized(state)


def _hole(batch) -> np.ndarray:
  return np.asarray(batch["mask"][..., 0]) > 0


def _hole_change(a: np.ndarray, b: np.ndarray, hole: np.ndarray) -> np.ndarray:
  """Largest |a - b| inside each example's hole, over all samples: [B]."""
  return np.array([np.abs(a[:, i] - b[:, i])[:, hole[i]].max() for i in range(len(hole))])


# --- No hole leakage ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(registry._MODULES))
def test_samples_do_not_depend_on_the_hole_pixels(name):
  if name not in TINY:
    pytest.fail(f"family {name!r} has no tiny config: add one to tests.test_models.built")
  sample, state = sampler(name)
  batch = make_batch(empty_first_caption=False)
  hole = _hole(batch)
  image = np.asarray(batch["image"])
  base = sample(state, batch, KEY)

  refilled = image.copy()
  refilled[hole] = np.random.default_rng(1).uniform(-1, 1, refilled[hole].shape)
  assert (refilled != image)[hole].all()
  np.testing.assert_allclose(
    sample(state, {**batch, "image": jnp.asarray(refilled)}, KEY), base, rtol=0, atol=1e-6
  )

  # Positive control: one border pixel next to the hole changes the generated hole.
  poked = image.copy()
  poked[:, 15, 24] = np.where(image[:, 15, 24] > 0, -1.0, 1.0)
  moved = sample(state, {**batch, "image": jnp.asarray(poked)}, KEY)
  assert (_hole_change(moved, base, hole) > 1e-4).all()


# --- Captions ------------------------------------------------------------------------------


def _other_captions(batch):
  """Every example gets the previous example's (different, non-empty) caption."""
  return {
    **batch,
    "tokens": jnp.roll(batch["tokens"], 1, axis=0),
    "token_mask": jnp.roll(batch["token_mask"], 1, axis=0),
  }


@pytest.mark.parametrize("name", ["vaegan", "l2"])
def test_the_caption_changes_the_samples(name):
  sample, state = sampler(name)
  batch = make_batch(empty_first_caption=False)
  hole = _hole(batch)
  base = sample(state, batch, KEY)
  other = sample(state, _other_captions(batch), KEY)
  assert (_hole_change(other, base, hole) > 1e-4).all()
  np.testing.assert_array_equal(other[:, ~hole], base[:, ~hole])  # The border is copied.


def test_l2_without_captions_ignores_them():
  config, *_ = built("l2_no_caption")
  assert not config.model.use_caption
  sample, state = sampler("l2_no_caption")
  batch = make_batch(empty_first_caption=False)
  base = sample(state, batch, KEY)
  np.testing.assert_array_equal(sample(state, _other_captions(batch), KEY), base)
  empty = {
    **batch,
    "tokens": jnp.zeros_like(batch["tokens"]),
    "token_mask": jnp.zeros_like(batch["token_mask"]),
  }
  np.testing.assert_array_equal(sample(state, empty, KEY), base)


# --- GAN step order ------------------------------------------------------------------------


def _is_d(key: str) -> bool:
  return key.startswith(("['discriminator']", "['opt_d']"))


def _is_running_average(key: str) -> bool:
  """pix2pix's batch-norm running averages: every forward pass in train mode updates them
  (PyTorch semantics), the G-step pass through D included."""
  return key.endswith(("['mean']", "['var']"))


def gan_step(name: str, update_d: bool):
  """Compiled (state, d_state, batch, rng) -> (state after the step, state right after D's
  update, metrics): one train step from `state` with its discriminator replaced by
  `d_state`, `gan.update_discriminator` spied on. With `update_d=False` D's update is
  skipped, so G's step runs against exactly `d_state`."""
  config, family, graphdef, state = built(name)
  hp = family.hparams(config)
  real_update = gan.update_discriminator

  def step(state, d_state, batch, rng):
    bundle = nnx.merge(graphdef, state)
    nnx.update(bundle.discriminator, d_state)
    after_d = []

    def spy(discriminator, optimizer, loss_fn):
      if update_d:
        result = real_update(discriminator, optimizer, loss_fn)
      else:
        graph, current = nnx.split(discriminator)
        loss, aux = loss_fn(nnx.merge(graph, current, copy=True))  # a copy: D unchanged
        result = (loss, {**aux, "grad_norm_d": jnp.float32(0)}, (graph, current))
      after_d.append(nnx.to_pure_dict(nnx.state(bundle)))  # The values now, not references.
      return result

    gan.update_discriminator = spy
    try:
      metrics = family.train_step(bundle, batch, rng, hp)
    finally:
      gan.update_discriminator = real_update
    assert len(after_d) == 1, "train_step must update D once, through gan.update_discriminator"
    return nnx.state(bundle), after_d[0], metrics

  return fast_jit(step, state, state["discriminator"], make_batch(), KEY)


@pytest.mark.parametrize("name", ["vaegan", "pix2pix"])
def test_gan_step_updates_d_then_g_against_the_updated_d(name):
  _, _, _, state = built(name)
  batch = make_batch(empty_first_caption=False)
  full = gan_step(name, update_d=True)
  new_state, after_d_state, metrics = full(state, state["discriminator"], batch, KEY)
  before, after_d, after = _flat(state), _flat(after_d_state), _flat(new_state)
  trained = {k for k in before if not _is_running_average(k)}
  if name == "pix2pix":
    assert len(trained) < len(before)

  # D's update comes first: it moved D and nothing of G's had moved yet.
  assert any(not np.array_equal(after_d[k], before[k]) for k in trained if _is_d(k))
  for k in trained - {k for k in trained if _is_d(k)}:
    np.testing.assert_array_equal(after_d[k], before[k], err_msg=k)
  assert any(not np.array_equal(after[k], before[k]) for k in trained if not _is_d(k))

  # G's step leaves D (parameters, power-iteration vectors, D's optimizer) as D's update
  # left it: G's gradient never reaches D.
  for k in trained:
    if _is_d(k):
      np.testing.assert_array_equal(after[k], after_d[k], err_msg=k)

  # G was updated against the updated D: a step whose D update is skipped, started from
  # the updated D, gives the same G step; started from the old D, a different one.
  frozen = gan_step(name, update_d=False)
  ref_state, _, ref_metrics = frozen(state, new_state["discriminator"], batch, KEY)
  old_state, _, old_metrics = frozen(state, state["discriminator"], batch, KEY)
  g_adv = float(metrics["loss_g_adv"])
  assert float(ref_metrics["loss_g_adv"]) == pytest.approx(g_adv, rel=1e-5, abs=1e-6)
  assert float(ref_metrics["grad_norm_g"]) == pytest.approx(float(metrics["grad_norm_g"]), 1e-4)
  assert abs(float(old_metrics["loss_g_adv"]) - g_adv) > 1e-4
  ref, old = _flat(ref_state), _flat(old_state)
  g_keys = [k for k in trained if not _is_d(k)]
  for k in g_keys:
    np.testing.assert_allclose(ref[k], after[k], rtol=0, atol=1e-6, err_msg=k)
  assert max(np.abs(old[k] - after[k]).max() for k in g_keys) > 1e-4


# --- Branches the default configs never run ---------------------------------------------------


@functools.cache
def vaegan_step(**loss):
  """(metrics as floats, hparams) of one vaegan train step, `loss` overriding the hparams."""
  config, family, graphdef, state = built("vaegan")
  hp = dataclasses.replace(family.hparams(config), **loss)

  def step(state, batch, rng):
    return family.train_step(nnx.merge(graphdef, state), batch, rng, hp)

  batch = make_batch(empty_first_caption=False)
  metrics = fast_jit(step, state, batch, KEY)(state, batch, KEY)
  metrics = {k: float(v) for k, v in metrics.items()}
  for key, value in metrics.items():
    assert np.isfinite(value), key
  return metrics, hp


def test_vaegan_nonsaturating_gan_loss():
  metrics, _ = vaegan_step(gan_loss="nonsaturating")
  real, fake = metrics["d_logit_real"], metrics["d_logit_fake"]
  # softplus(-x) on D's real logits and softplus(x) on fake ones; near 0 these are
  # log 2 -+ x/2 (the hinge would give 1 -+ x). Jensen: the mean of softplus is at least
  # softplus of the mean.
  assert max(abs(real), abs(fake)) < 0.5
  softplus = lambda x: float(np.logaddexp(0.0, x))  # noqa: E731
  assert softplus(-real) - 1e-6 <= metrics["loss_d_real"] < np.log(2) + 0.3
  assert softplus(fake) - 1e-6 <= metrics["loss_d_fake"] < np.log(2) + 0.3
  assert abs(metrics["loss_d_real"] - (1 - real)) > 0.1
  assert 0 < metrics["loss_g_adv"] < np.log(2) + 0.3  # -mean(D) under the hinge.


def test_vaegan_feature_matching():
  off, hp = vaegan_step()
  assert hp.feature_matching == 0 and off["loss_fm"] == 0.0  # Off by default.
  on, _ = vaegan_step(feature_matching=0.7)
  assert on["loss_fm"] > 0
  # The same step otherwise (D's update does not involve it): G's loss grows by 0.7 * FM.
  assert on["loss_d"] == pytest.approx(off["loss_d"], rel=1e-5)
  assert on["loss_g"] - off["loss_g"] == pytest.approx(0.7 * on["loss_fm"], rel=1e-4)


def test_vaegan_without_mismatch_term():
  on, hp = vaegan_step()
  assert hp.mismatch_weight > 0 and on["loss_d_mismatch"] > 0
  off, _ = vaegan_step(mismatch_weight=0.0)
  assert off["loss_d_mismatch"] == 0.0
  # D's real and fake terms are unchanged; the mismatched term left D's loss.
  for key in ("loss_d_real", "loss_d_fake", "d_logit_real", "d_logit_fake"):
    assert off[key] == pytest.approx(on[key], rel=1e-5), key
  expected = hp.mismatch_weight * on["loss_d_mismatch"]
  assert on["loss_d"] - off["loss_d"] == pytest.approx(expected, rel=1e-4)


def test_pix2pix_sample_dropout():
  batch = make_batch(empty_first_caption=False)
  hole = _hole(batch)
  plain, state = sampler("pix2pix", 3, sample_dropout=False)
  samples = plain(state, batch, KEY)
  np.testing.assert_array_equal(samples[1], samples[0])
  np.testing.assert_array_equal(samples[2], samples[0])
  np.testing.assert_array_equal(plain(state, batch, jax.random.key(9)), samples)

  noisy, state = sampler("pix2pix", 3, sample_dropout=True)
  samples = noisy(state, batch, KEY)
  for a, b in ((0, 1), (0, 2), (1, 2)):
    assert (_hole_change(samples[a][None], samples[b][None], hole) > 1e-4).all(), (a, b)
  np.testing.assert_array_equal(
    samples[:, ~hole], np.broadcast_to(np.asarray(batch["image"])[~hole], samples[:, ~hole].shape)
  )
  np.testing.assert_array_equal(noisy(state, batch, KEY), samples)  # Same rng, same masks.
  assert np.abs(noisy(state, batch, jax.random.key(9)) - samples).max() > 1e-4
