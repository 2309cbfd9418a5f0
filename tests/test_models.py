"""Model families: shapes, compositing, sampling, matching-aware D input, train steps.

Models are tiny and built under jit (one compile) the way the trainer builds them; jitted
functions are compiled with XLA's backend optimisation off, which halves compile time.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common, smoke
from configs import l2 as l2_config
from configs import painter as painter_config
from configs import pix2pix as pix2pix_config
from inpainting.models import layers, registry, strided_conv
from inpainting.models.discriminator import matching_aware_batch, mismatched_captions
from inpainting.models.text_encoder import CaptionEncoder

BATCH, LENGTH, VOCAB = 4, 8, 64
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def fast_jit(fn, *args):
  """jit + compile with cheap codegen; returns the compiled callable."""
  return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)


def make_batch(seed: int = 0, empty_first_caption: bool = True) -> dict[str, jax.Array]:
  """A random batch with the centre hole; distinct captions, the first one empty."""
  rng = np.random.default_rng(seed)
  mask = np.zeros((BATCH, 64, 64, 1), np.float32)
  mask[:, 16:48, 16:48] = 1
  tokens = np.zeros((BATCH, LENGTH), np.int32)
  for i in range(BATCH):
    length = 3 + i
    tokens[i, :length] = rng.integers(4, VOCAB, length)
  if empty_first_caption:
    tokens[0] = 0
  # Conversation parts (families that read `segments`): positions 0-1, 2, 3-4, 5 on.
  segments = np.minimum(np.arange(LENGTH) * 2 // 3, 3)[None].repeat(BATCH, 0) * (tokens != 0)
  return {
    "segments": jnp.asarray(segments.astype(np.int32)),
    "image": jnp.asarray(rng.uniform(-1, 1, (BATCH, 64, 64, 3)).astype(np.float32)),
    "mask": jnp.asarray(mask),
    "tokens": jnp.asarray(tokens),
    "token_mask": jnp.asarray(tokens != 0),
  }


def vaegan_config():
  config = smoke.get_config()
  config.model.vocab_size = VOCAB
  return config


def l2_tiny_config(use_caption: bool = True):
  config = l2_config.get_config()
  config.model.vocab_size = VOCAB
  config.model.text = common.text_encoder("tiny")
  config.model.widths = (8, 16, 16)
  config.model.attention_resolutions = (8,)
  config.model.attention_heads = 2
  config.model.use_caption = use_caption
  config.loss.l1_weight = 0.5
  config.optim.warmup_steps = 0
  return config


def pix2pix_tiny_config():
  config = pix2pix_config.get_config()
  config.model.ngf = 4  # Same structure as the reference, narrower.
  config.model.ndf = 4
  return config


def painter_tiny_config(z_dim: int = 4):
  config = painter_config.get_config()
  config.model.z_dim = z_dim
  config.model.encoder_widths = (8, 8, 8, 8)
  config.loss.kl_weight = 0.01
  config.loss.kl_free_bits = 0.01  # Every KL term in the graph.
  config.loss.prior_fit_weight = 1.0
  config.model.vocab_size = VOCAB
  config.model.text = common.text_encoder("tiny")
  config.model.reader_width = 8
  config.model.widths = (8, 16, 16)
  config.model.attention_resolutions = (8,)
  config.model.attention_heads = 2
  config.data.max_caption_length = LENGTH
  config.optim.warmup_steps = 0
  return config


@functools.cache
def built(name: str):
  """(family, graphdef, state) for a tiny config, created once per test session."""
  config = {
    "vaegan": vaegan_config,
    "l2": l2_tiny_config,
    "l2_no_caption": lambda: l2_tiny_config(use_caption=False),
    "pix2pix": pix2pix_tiny_config,
    "painter": painter_tiny_config,
    "painter_no_latent": lambda: painter_tiny_config(z_dim=0),
  }[name]()
  family = registry.get(config.model.name)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: family.create(config, nnx.Rngs(0))))
  state = fast_jit(lambda: nnx.state(family.create(config, nnx.Rngs(0))))()
  return config, family, graphdef, state


def sample_fn(name: str, num_samples: int):
  config, family, graphdef, state = built(name)

  def sample(state, batch, rng):
    return family.sample(
      nnx.merge(graphdef, state), batch, rng, num_samples, family.hparams(config)
    )

  return fast_jit(sample, state, make_batch(), jax.random.key(0)), state


def test_vaegan_samples_differ_inside_the_hole_only():
  sample, state = sample_fn("vaegan", 3)
  batch = make_batch()
  samples = np.asarray(sample(state, batch, jax.random.key(1)))
  assert samples.shape == (3, BATCH, 64, 64, 3) and samples.dtype == np.float32
  assert np.isfinite(samples).all()  # Including the all-padding caption of example 0.
  hole = np.asarray(batch["mask"][..., 0]) > 0
  image = np.asarray(batch["image"])
  for k in range(3):
    # Compositing copies the border bit for bit.
    np.testing.assert_array_equal(samples[k][~hole], image[~hole])
  assert np.abs(samples[0] - samples[1])[hole].max() > 1e-4  # K samples differ
  again = np.asarray(sample(state, batch, jax.random.key(2)))
  assert np.abs(again[0] - samples[0])[hole].max() > 1e-4  # and so do rngs
  np.testing.assert_array_equal(np.asarray(sample(state, batch, jax.random.key(1))), samples)


def test_l2_sample_repeats_one_completion():
  for name in ("l2", "l2_no_caption"):
    sample, state = sample_fn(name, 2)
    batch = make_batch()
    samples = np.asarray(sample(state, batch, jax.random.key(1)))
    assert samples.shape == (2, BATCH, 64, 64, 3)
    np.testing.assert_array_equal(samples[0], samples[1])
    hole = np.asarray(batch["mask"][..., 0]) > 0
    np.testing.assert_array_equal(samples[0][~hole], np.asarray(batch["image"])[~hole])


def test_matching_aware_batch_pairs_real_images_with_other_captions():
  batch = make_batch(empty_first_caption=False)
  fake = -batch["image"]
  d_batch = matching_aware_batch(batch, fake)
  assert d_batch["image"].shape == (3 * BATCH, 64, 64, 3)
  assert d_batch["mask"].shape == (3 * BATCH, 64, 64, 1)
  tokens = np.asarray(batch["tokens"])
  segments = np.split(np.asarray(d_batch["tokens"]), 3)
  images = np.split(np.asarray(d_batch["image"]), 3)
  np.testing.assert_array_equal(images[0], batch["image"])
  np.testing.assert_array_equal(images[1], fake)
  np.testing.assert_array_equal(images[2], batch["image"])  # real image ...
  np.testing.assert_array_equal(segments[0], tokens)
  np.testing.assert_array_equal(segments[1], tokens)
  for i in range(BATCH):  # ... with another example's caption
    assert not np.array_equal(segments[2][i], tokens[i])
    np.testing.assert_array_equal(segments[2][i], tokens[(i - 1) % BATCH])
  wrong_tokens, wrong_mask = mismatched_captions(batch["tokens"], batch["token_mask"])
  np.testing.assert_array_equal(np.asarray(wrong_mask), np.asarray(wrong_tokens) != 0)
  no_mismatch = matching_aware_batch(batch, fake, with_mismatch=False)
  assert no_mismatch["image"].shape[0] == 2 * BATCH


def run_module(module, fn, *args):
  """fn(module, *args) under one fast jit (eager NNX would compile op by op)."""
  graphdef, state = nnx.split(module)
  return fast_jit(lambda state, *a: fn(nnx.merge(graphdef, state), *a), state, *args)(state, *args)


def test_empty_caption_is_finite_and_pools_to_zero():
  config = vaegan_config()
  init = layers.ParamInit(nnx.Rngs(0))
  encoder = CaptionEncoder(config.model.text, VOCAB, LENGTH, init=init, dtype=jnp.float32)
  init.finish()
  tokens = jnp.zeros((2, LENGTH), jnp.int32)
  words, sentence = run_module(encoder, lambda m, t: m(t, t != 0), tokens)
  assert np.isfinite(np.asarray(words)).all()
  np.testing.assert_array_equal(np.asarray(sentence), 0.0)


def test_segment_embeddings_tell_the_parts_apart_only_when_configured():
  tokens = jnp.asarray(make_batch(empty_first_caption=False)["tokens"])
  mask = tokens != 0
  # Part 0 for the first half of each text, part 1 (then 2, read as the last) after it.
  segments = jnp.where(jnp.arange(LENGTH) < 3, 0, jnp.where(jnp.arange(LENGTH) < 5, 1, 2))
  segments = jnp.broadcast_to(segments, tokens.shape) * mask
  outputs = {}
  for num_segments in (0, 2):
    text = common.text_encoder("tiny")
    text.num_segments = num_segments
    init = layers.ParamInit(nnx.Rngs(0))
    encoder = CaptionEncoder(text, VOCAB, LENGTH, init=init, dtype=jnp.float32)
    init.finish()

    def encode(m, t, k, s):
      return m(t, k, s)[1], m(t, k, jnp.zeros_like(s))[1], m(t, k, None)[1], m(t, k, 1 + s)[1]

    outputs[num_segments] = [
      np.asarray(x) for x in run_module(encoder, encode, tokens, mask, segments)
    ]
  told, zeros, absent, shifted = outputs[2]
  np.testing.assert_array_equal(zeros, absent)  # No segments = every token in part 0.
  assert np.abs(told - zeros).max() > 1e-4  # The parts change the encoding.
  # Parts past the table's end share its last row: part 2 reads as part 1 (1 + 1 as 1 + 2).
  np.testing.assert_allclose(
    shifted,
    run_module(encoder, lambda m, t, k: m(t, k, jnp.ones_like(t))[1], tokens, mask),
    atol=1e-6,
  )
  told, zeros, absent, shifted = outputs[0]
  for other in (zeros, absent, shifted):
    np.testing.assert_array_equal(told, other)  # Off: segments are not read.


def test_cross_attention_ignores_empty_captions():
  init = layers.ParamInit(nnx.Rngs(0))
  attention = layers.CrossAttention(8, 16, 2, init=init, dtype=jnp.float32)
  init.finish()
  attention.out.kernel[...] = jnp.ones_like(attention.out.kernel[...])  # Non-zero output.
  x = jnp.ones((2, 4, 4, 8))
  words = jnp.ones((2, LENGTH, 16))
  word_mask = jnp.array([[False] * LENGTH, [True] * 3 + [False] * (LENGTH - 3)])
  out = np.asarray(run_module(attention, lambda m, *a: m(*a), x, words, word_mask))
  np.testing.assert_array_equal(out[0], np.asarray(x[0]))  # empty caption: unchanged
  assert np.abs(out[1] - np.asarray(x[1])).max() > 0


def _params(state):
  """{"['part']['layer']['name']": array} for every leaf of an nnx state."""
  return {
    jax.tree_util.keystr(path).removesuffix(".value"): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(state)
  }


@pytest.mark.parametrize("name", ["vaegan", "l2", "pix2pix", "painter", "painter_no_latent"])
def test_one_train_step_under_jit(name):
  config, family, graphdef, state = built(name)
  before = _params(state)

  def step(state, batch, rng):  # As the trainer wraps it: pure, merge/split.
    bundle = nnx.merge(graphdef, state)
    metrics = family.train_step(bundle, batch, rng, family.hparams(config))
    return nnx.state(bundle), metrics

  batch = make_batch()
  compiled = fast_jit(step, state, batch, jax.random.key(3))
  # Two steps: zero-initialised FiLM/attention outputs leave the text encoder's first
  # gradient at exactly zero; it moves from the second step on.
  new_state, metrics = compiled(state, batch, jax.random.key(3))
  new_state, metrics = compiled(new_state, batch, jax.random.key(4))
  for key, value in metrics.items():
    assert value.shape == () and np.isfinite(float(value)), key
  assert float(metrics["learning_rate"]) > 0
  after = _params(new_state)
  assert before.keys() == after.keys()
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  # Every trainable part moved, and the optimizers counted the steps.
  parts = {
    "vaegan": ["text", "generator", "posterior", "prior", "discriminator"],
    "l2": ["text", "generator"],
    "pix2pix": ["generator", "discriminator"],
    "painter": ["text", "reader", "to_condition", "generator", "latent"],
    "painter_no_latent": ["text", "reader", "to_condition", "generator"],
  }[name]
  for part in parts:
    assert any(k.startswith(f"['{part}']") for k in changed), part
  steps = {k: v for k, v in after.items() if k.endswith("['step']")}
  assert steps and all(int(v) == 2 for v in steps.values())
  if name == "vaegan":  # Spectral-norm power iteration advanced.
    assert any(k.endswith("['u']") for k in changed)
  if name == "pix2pix":  # Batch-norm running averages updated.
    assert any(k.endswith("['var']") for k in changed)


def test_pix2pix_has_the_reference_parameter_counts():
  config = pix2pix_config.get_config()
  config.model.vocab_size = VOCAB
  family = registry.get("pix2pix")
  bundle = nnx.eval_shape(lambda: family.create(config, nnx.Rngs(0)))

  def count(module):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))

  assert count(bundle.generator) == 29_245_059
  assert count(bundle.discriminator) == 2_769_729


def test_pix2pix_shapes():
  _, family, graphdef, state = built("pix2pix")
  x = registry.masked_input(make_batch())

  def forward(state, x):
    bundle = nnx.merge(graphdef, state)
    out = bundle.generator(x, False, None)
    return out, bundle.discriminator(x, out, False)

  out, logits = fast_jit(forward, state, x)(state, x)
  assert out.shape == (BATCH, 64, 64, 3)
  assert float(jnp.abs(out).max()) <= 1.0
  assert logits.shape == (BATCH, 6, 6, 1)


def test_conv_and_transposed_conv_follow_pytorch_semantics():
  """4x4 stride-2 padding-1 conv halves, the transposed conv doubles, as in PyTorch."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 3, 2)).astype(np.float32)
  torch_weight = rng.normal(size=(2, 5, 4, 4)).astype(np.float32)  # [in, out, kh, kw]
  # PyTorch ConvTranspose2d: out[o * 2 - 1 + k] += x[o] * w[k].
  expected = np.zeros((1, 8, 8, 5), np.float32)
  padded = np.zeros((1, 10, 10, 5), np.float32)
  for iy in range(3):
    for ix in range(3):
      for ky in range(4):
        for kx in range(4):
          padded[0, iy * 2 + ky, ix * 2 + kx] += x[0, iy, ix] @ torch_weight[:, :, ky, kx]
  expected = padded[:, 1:7, 1:7]  # Crop padding=1 on each side: (3 - 1) * 2 - 2 + 4 = 6.
  init = layers.ParamInit(nnx.Rngs(0))
  up = layers.ConvTranspose(2, 5, init=init, use_bias=False, kernel_std=0.02)
  up.kernel[...] = jnp.asarray(torch_weight.transpose(2, 3, 1, 0))
  np.testing.assert_allclose(np.asarray(up(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-5)

  for impl in strided_conv.IMPLS:  # The measured CPU choice and XLA's own forms.
    down = layers.Conv(
      2, 5, 4, init=init, stride=2, padding=1, use_bias=False, kernel_std=0.02, impl=impl
    )
    init.finish()
    kernel = np.asarray(down.kernel[...])
    assert np.abs(kernel).min() > 0
    for size in (8, 4):
      image = rng.normal(size=(1, size, size, 2)).astype(np.float32)
      padded_image = np.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0)))
      conv_expected = np.zeros((1, size // 2, size // 2, 5), np.float32)
      for oy in range(size // 2):
        for ox in range(size // 2):
          patch = padded_image[0, oy * 2 : oy * 2 + 4, ox * 2 : ox * 2 + 4]
          conv_expected[0, oy, ox] = np.einsum("hwi,hwio->o", patch, kernel)
      np.testing.assert_allclose(np.asarray(down(jnp.asarray(image))), conv_expected, atol=1e-5)


def test_spectral_norm_converges_and_only_updates_when_asked():
  init = layers.ParamInit(nnx.Rngs(0))
  conv = layers.SNConv(3, 6, 3, init=init)
  init.finish()
  x = jnp.ones((1, 4, 4, 3))
  u_before = np.asarray(conv.u[...])
  conv(x, update_stats=False)
  np.testing.assert_array_equal(np.asarray(conv.u[...]), u_before)
  for _ in range(30):
    conv(x, update_stats=True)
  normalized = layers.spectral_normalize(conv.conv.kernel[...], conv.u, False)
  top = np.linalg.svd(np.asarray(normalized).reshape(-1, 6), compute_uv=False)[0]
  assert top == pytest.approx(1.0, rel=0.02)


def test_torch_batch_norm_running_statistics():
  norm = layers.TorchBatchNorm(2, init=layers.ParamInit(nnx.Rngs(0)))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 3, 2)).astype(np.float32))
  y = norm(x, train=True)
  flat = np.asarray(x).reshape(-1, 2)
  np.testing.assert_allclose(np.asarray(norm.mean[...]), 0.1 * flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(norm.var[...]), 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
  normalized = (np.asarray(y).reshape(-1, 2) - 0) / 1  # scale ~ 1, bias 0
  assert np.abs(normalized.mean(0)).max() < 1e-4
  eval_out = norm(x, train=False)
  assert eval_out.shape == x.shape
