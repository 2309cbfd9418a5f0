"""vaegan's optional training terms: EMA of G, the prior (generative) path, free bits, R1."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from configs import smoke
from inpainting import checkpointing, evaluate, inference, train
from inpainting.errors import UserError
from tests.test_models import VOCAB, fast_jit, make_batch

OPTIONS = {
  "loss.prior_adversarial_weight": 0.5,
  "loss.kl_free_bits": 0.1,
  "loss.r1_weight": 1.0,
  "optim.ema_decay": 0.9,
  "loss.perceptual_weight": 1.0,
  "loss.prior_fit_weight": 1.0,
  "loss.adversarial_patches": "all",
  "model.extra_up_blocks": 1,
}


def _config(**overrides):
  config = smoke.get_config()
  config.model.vocab_size = VOCAB
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  return config


def _two_steps(config):
  family, hp = train.registry.for_config(config)
  bundle = family.create(config, nnx.Rngs(0))
  graphdef, state = nnx.split(bundle)

  def step(state, batch, rng):
    bundle = nnx.merge(graphdef, state)
    metrics = family.train_step(bundle, batch, rng, hp)
    return nnx.state(bundle), metrics

  compiled = fast_jit(step, state, make_batch(), jax.random.key(0))
  first, _ = compiled(state, make_batch(), jax.random.key(0))
  second, metrics = compiled(first, make_batch(seed=1), jax.random.key(1))
  return graphdef, state, second, {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_each_option_trains_and_reports_its_term(option):
  graphdef, before, after, metrics = _two_steps(_config(**{option: OPTIONS[option]}))
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  if option == "model.extra_up_blocks":  # One trained residual block per up level.
    old, new = nnx.merge(graphdef, before).generator, nnx.merge(graphdef, after).generator
    assert len(new.extra_up_blocks) == len(new.up_blocks) == 3
    for a, b in zip(old.extra_up_blocks, new.extra_up_blocks):
      assert not np.allclose(a.conv.kernel[...], b.conv.kernel[...])
  if option == "loss.prior_adversarial_weight":
    assert metrics["loss_g_adv_prior"] != 0.0
  if option == "loss.r1_weight":
    assert metrics["r1"] > 0.0
  if option == "loss.perceptual_weight":
    assert metrics["loss_perceptual"] > 0.0
  if option == "loss.prior_fit_weight":
    assert metrics["loss_prior_fit"] > 0.0
  if option == "loss.adversarial_patches":  # Another average of D's logits than "hole".
    _, _, _, hole = _two_steps(_config(**{option: "hole"}))
    assert abs(metrics["loss_d_real"] - hole["loss_d_real"]) > 1e-4


def test_unknown_adversarial_patches_is_a_user_error():
  with pytest.raises(train.registry.UserError, match="loss.adversarial_patches must be one of"):
    train.registry.for_config(_config(**{"loss.adversarial_patches": "border"}))


def test_without_options_the_terms_are_off():
  _, _, _, metrics = _two_steps(_config())
  assert metrics["loss_g_adv_prior"] == 0.0 and metrics["r1"] == 0.0
  assert metrics["loss_perceptual"] == 0.0


def test_free_bits_floor_each_dimension():
  from inpainting import losses  # noqa: PLC0415

  mu = np.zeros((4, 3), np.float32)
  log_sigma = np.zeros((4, 3), np.float32)
  mu_q = mu.copy()
  mu_q[:, 0] = 2.0  # Dimension 0: KL 2 nats; dimensions 1, 2: 0.
  assert float(losses.gaussian_kl(mu_q, log_sigma, mu, log_sigma)) == pytest.approx(2.0)
  floored = losses.gaussian_kl_free_bits(mu_q, log_sigma, mu, log_sigma, 0.5)
  assert float(floored) == pytest.approx(2.0 + 0.5 + 0.5)


def test_ema_tracks_the_generator_and_sampling_uses_it():
  config = _config(**{"optim.ema_decay": 0.9})
  family, hp = train.registry.for_config(config)
  bundle = family.create(config, nnx.Rngs(0))
  graphdef, before = nnx.split(bundle)

  def step(state, batch, rng):
    bundle = nnx.merge(graphdef, state)
    family.train_step(bundle, batch, rng, hp)
    return nnx.state(bundle)

  after = fast_jit(step, before, make_batch(), jax.random.key(0))(
    before, make_batch(), jax.random.key(0)
  )
  old, new = nnx.merge(graphdef, before), nnx.merge(graphdef, after)
  p0 = np.asarray(old.generator.out_conv.kernel[...])
  p1 = np.asarray(new.generator.out_conv.kernel[...])
  assert not np.allclose(p0, p1)
  # One update at optimizer step 1: decay min(0.9, 2 / 11), average of init and new weights.
  average = np.asarray(new.sampling_parts()[1].out_conv.kernel[...])
  np.testing.assert_allclose(average, 2 / 11 * p0 + 9 / 11 * p1, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(new.generator.out_conv.kernel[...]), p1)
  # Sampling uses the averages: setting them to the live weights changes the samples.
  batch = make_batch()
  with_average = np.asarray(family.sample(new, batch, jax.random.key(1), 1, hp))
  new.ema.update(new.generator_parts(), new.opt_g.step[...], 0.0)  # Decay 0: copy.
  with_live = np.asarray(family.sample(new, batch, jax.random.key(1), 1, hp))
  assert np.abs(with_average - with_live).max() > 1e-6


def test_ema_is_checkpointed_and_resumes_exactly(tmp_path, data_dir):
  def run(workdir, steps):
    config = smoke.get_config()
    config.data.dir = data_dir
    config.optim.ema_decay = 0.9
    config.num_train_steps = steps
    config.checkpoint_every_steps = 5
    config.eval_every_steps = 100
    config.mesh.num_devices = 1
    train.train_and_evaluate(config, str(workdir))
    return checkpointing.read_latest_state(str(workdir / "checkpoints"))

  _, straight = run(tmp_path / "straight", 10)
  run(tmp_path / "resumed", 5)
  step, resumed = run(tmp_path / "resumed", 10)
  assert step == 10
  ema_keys = [k for k in straight if ".ema." in f".{k}." or k.startswith("model.ema")]
  assert ema_keys, sorted(straight)[:5]
  for key in straight:
    np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)

  # Sampling reads the average; `average=False` reads the raw weights of the same checkpoint.
  averaged = inference.load_run(str(tmp_path / "straight"))
  raw = inference.load_run(str(tmp_path / "straight"), average=False)
  bundle = nnx.merge(averaged.graphdef, averaged.state["model"])
  assert nnx.merge(raw.graphdef, raw.state["model"]).ema is None
  batch = next(evaluate.batches(data_dir, "validation", averaged, "first", 4, 4))
  with_average, with_raw = averaged.sample(batch, 1, 0), raw.sample(batch, 1, 0)
  bundle.ema.update(bundle.generator_parts(), bundle.opt_g.step[...], 0.0)  # Copy the raw.
  _, copied = nnx.split(bundle)
  live = dataclasses.replace(averaged, state={**averaged.state, "model": copied})
  np.testing.assert_allclose(with_raw, live.sample(batch, 1, 0), atol=1e-6)
  assert np.abs(with_average - with_raw).max() > 1e-4


def test_raw_weights_of_a_run_without_an_average_is_a_user_error(tmp_path, data_dir):
  config = smoke.get_config()
  config.data.dir = data_dir
  config.num_train_steps = 1
  config.mesh.num_devices = 1
  train.train_and_evaluate(config, str(tmp_path))
  inference.load_run(str(tmp_path))  # Loads with its (raw) weights.
  with pytest.raises(UserError, match="keeps no moving average"):
    inference.load_run(str(tmp_path), average=False)


def test_caption_dropout_empties_the_chosen_captions_only():
  tokens = np.random.default_rng(0).integers(1, 50, (256, 6)).astype(np.int32)
  batch = {"tokens": jax.numpy.asarray(tokens), "token_mask": jax.numpy.asarray(tokens != 0)}
  dropped = train.registry.drop_captions(batch, jax.random.key(3), 0.25)
  tokens, mask = np.asarray(dropped["tokens"]), np.asarray(dropped["token_mask"])
  emptied = ~mask.any(axis=1)
  assert 0.15 < emptied.mean() < 0.35, emptied.mean()
  assert (tokens[emptied] == 0).all()  # The empty caption: all padding.
  kept = ~emptied
  np.testing.assert_array_equal(tokens[kept], np.asarray(batch["tokens"])[kept])
  assert train.registry.drop_captions(batch, jax.random.key(3), 0.0) is batch


def test_caption_dropout_trains():
  _, _, _, metrics = _two_steps(_config(**{"loss.caption_dropout": 0.5}))
  assert all(np.isfinite(v) for v in metrics.values()), metrics


def test_cond_map_lays_the_caption_out_in_space():
  """With the map, the caption's effect on the output differs from pixel to pixel even
  where FiLM alone (the same at every pixel) could not make it differ."""
  config = _config(**{"model.cond_map_resolutions": (8, 16)})
  family, hp = train.registry.for_config(config)
  bundle = family.create(config, nnx.Rngs(0))
  unet = bundle.generator
  assert len(unet.cond_maps) == 2 and unet.cond_maps[0].kernel.shape[-1] == 8 * 8 * 16
  h = jax.numpy.zeros((2, 8, 8, config.model.widths[-1]))
  film = jax.random.normal(jax.random.key(0), (2, unet.cond_maps[0].kernel.shape[0]))
  out = np.asarray(unet._add_cond_map(h, film, 8))
  assert out.std(axis=(1, 2)).mean() > 1e-4  # Varies across pixels from a uniform input.
  np.testing.assert_array_equal(np.asarray(unet._add_cond_map(h, film, 32)), np.asarray(h))
  _, _, _, metrics = _two_steps(config)
  assert all(np.isfinite(v) for v in metrics.values()), metrics


def test_cond_map_at_a_missing_level_is_a_user_error():
  config = _config(**{"model.cond_map_resolutions": (4,)})
  with pytest.raises(train.registry.UserError, match="not U-Net levels"):
    train.registry.for_config(config)


def test_an_unknown_perceptual_net_is_a_user_error():
  config = _config(**{"loss.perceptual_weight": 1.0, "loss.perceptual_net": "resnet"})
  with pytest.raises(train.registry.UserError, match="alexnet or vgg16"):
    train.registry.for_config(config)


def test_coordinate_channels_reach_the_generator_and_train():
  from inpainting.models import generator

  codes = np.asarray(generator.fourier_coordinates(3))
  assert codes.shape == (64, 64, 12)
  # Channel 0 is sin(pi x): x = -1 + 1/64 at the left pixel centre, odd about the middle.
  np.testing.assert_allclose(codes[0, 0, 0], np.sin(np.pi * (-1 + 1 / 64)), atol=1e-6)
  np.testing.assert_allclose(codes[:, :32, 0], -codes[:, :31:-1, 0], atol=1e-6)
  assert np.all(codes[:, :, 0] == codes[:1, :, 0])  # x channels do not vary down a column.
  config = _config(**{"model.coord_frequencies": 3})
  _, state, trained, metrics = _two_steps(config)
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  stem = state["generator"]["stem"]["kernel"][...]
  assert stem.shape[2] == (4 + 12) * 4  # Folded 2x2: 16 input channels per pixel.
  moved = trained["generator"]["stem"]["kernel"][...] - stem
  assert np.abs(np.asarray(moved)).sum() > 0


def test_gaussian_heads_start_informative():
  """mu reads its input from the first step (no zero-init saddle); sigma starts as set."""
  from inpainting.models import layers

  init = layers.ParamInit(nnx.Rngs(0))
  head = layers.gaussian_head(16, 4, init=init, initial_sigma=0.1)
  init.finish()
  x = jax.random.normal(jax.random.key(1), (8, 16))
  mu, log_sigma = np.split(np.asarray(head(x)), 2, axis=-1)
  assert mu.std() > 0.3  # LeCun-normal columns: about unit scale for unit inputs.
  np.testing.assert_allclose(log_sigma, np.log(0.1), rtol=1e-6)  # Zero weight, fixed bias.
