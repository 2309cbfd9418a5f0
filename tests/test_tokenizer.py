"""The tokenizer's word memo gives exactly SentencePiece's own ids."""

import io
import os

import numpy as np
import pytest
import sentencepiece as spm

from inpainting import scenes, tokenizer

# Text the memo must get right, beyond the generator's captions: unseen words, punctuation
# glued to words, case and spacing the normaliser folds, non-ASCII, control characters.
ODD_TEXTS = [
  "",
  "   ",
  "A   Tiny  MAGENTA  zigzag, left of centre!!",
  "what's there? it's a star-shaped thing (big)",
  "café naïve ½ ¨ﬁ",
  "tab\tand\nnewline",
  "control\x00char \x07bell",
  "numbers 12345 and 3.14",
  "xylophone quokka",
]


def _corpus(count: int = 200) -> list[str]:
  texts = []
  for index in range(count):
    _, scene, captions = scenes.generate(0, index)
    context, turns = scenes.conversation(0, index, scene)
    texts += [*captions, context, *(f"{t['question']} {t['answer']}" for t in turns)]
  return texts


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
  path = os.path.join(tmp_path_factory.mktemp("tok"), "tokenizer.model")
  tokenizer.train(_corpus(), path, vocab_size=128)
  return path


def _reference(model_path, texts, max_length):
  """What encode returned before the memo: SentencePiece on each whole text."""
  sp = spm.SentencePieceProcessor(model_file=model_path)
  tokens = np.zeros((len(texts), max_length), np.int32)
  for i, text in enumerate(texts):
    if not text.strip():
      continue
    ids = sp.encode(tokenizer.normalize(text), out_type=int)
    ids = [tokenizer.BOS_ID, *ids[: max_length - 2], tokenizer.EOS_ID]
    tokens[i, : len(ids)] = ids
  return tokens


@pytest.mark.parametrize("max_length", [8, 64])
def test_memoised_encoding_equals_whole_text_encoding(model_path, max_length):
  tok = tokenizer.Tokenizer(model_path)
  assert tok._by_word  # the models `train` writes take the memo path
  texts = _corpus(50) + ODD_TEXTS
  rng = np.random.default_rng(1)
  # Twice, in different batches: the second pass reads words from the memo.
  for _ in range(2):
    order = rng.permutation(len(texts))
    for start in range(0, len(texts), 16):
      batch = [texts[i] for i in order[start : start + 16]]
      tokens, mask = tok.encode(batch, max_length)
      np.testing.assert_array_equal(tokens, _reference(model_path, batch, max_length))
      np.testing.assert_array_equal(mask, tokens != tokenizer.PAD_ID)
  assert len(tok._word_pieces) > 10


def test_segments_are_numbered_per_part(model_path):
  tok = tokenizer.Tokenizer(model_path)
  parts = ["a red star on the left", "", "what colour? it is blue"]
  tokens, _, segments = tok.encode_segments([tokenizer.PART_BREAK.join(parts)], 32)
  sp = spm.SentencePieceProcessor(model_file=model_path)
  first, last = (sp.encode(tokenizer.normalize(p), out_type=int) for p in (parts[0], parts[2]))
  expected = [tokenizer.BOS_ID, *first, *last, tokenizer.EOS_ID]
  assert tokens[0, : len(expected)].tolist() == expected
  assert segments[0, : len(expected)].tolist() == [0] * (1 + len(first)) + [2] * (len(last) + 1)


def test_a_model_that_does_not_split_at_spaces_is_encoded_whole(tmp_path):
  # Pieces may then span words, so a word memo would be wrong: it must be off.
  proto = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter([tokenizer.normalize(t) for t in _corpus(100)]),
    model_writer=proto,
    vocab_size=200,
    model_type="bpe",
    split_by_whitespace=False,
    pad_id=0,
    unk_id=1,
    bos_id=2,
    eos_id=3,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  path = os.path.join(tmp_path, "across_words.model")
  with open(path, "wb") as f:
    f.write(proto.getvalue())
  tok = tokenizer.Tokenizer(path)
  assert not tok._by_word
  texts = _corpus(20)
  np.testing.assert_array_equal(tok.encode(texts, 48)[0], _reference(path, texts, 48))
  assert not tok._word_pieces
