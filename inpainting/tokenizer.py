"""SentencePiece caption tokenizer: train, load, encode to fixed length (numpy only).

Id 0 is padding, 1 unknown, 2 begin, 3 end. Captions are lower-cased before training and
encoding so that "A red star" and "a red star" share tokens. data_prep trains it on all the
text of the train split: captions, context captions, dialogue questions and answers.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# Separates the parts of a conversation text (context caption, turn 1, turn 2, ...). It is
# whitespace to `str.split`, so `normalize` and `encode` read it as a space;
# `encode_segments` numbers the parts.
PART_BREAK = "\x1f"
_SPACE = "\u2581"  # SentencePiece's piece for a space.


def normalize(caption: str) -> str:
  return " ".join(caption.lower().split())


def train(captions: Iterable[str], model_path: str, vocab_size: int) -> None:
  """Trains a BPE SentencePiece model on `captions` and writes it to `model_path`.

  If the corpus is too small for `vocab_size`, SentencePiece's own hard limit is used
  instead, so that tiny test fixtures still get a tokenizer; if it holds more distinct
  characters than `vocab_size` leaves room for, the vocabulary grows to one piece per
  character (plus the four special ids), so that no character of the corpus is unknown.
  """
  sentences = [normalize(c) for c in captions if c.strip()]
  if not sentences:
    raise ValueError("cannot train a tokenizer on zero captions")
  characters = set().union(*map(set, sentences)) - {" "} | {_SPACE}
  proto = io.BytesIO()
  kwargs = dict(
    sentence_iterator=iter(sentences),
    model_writer=proto,
    vocab_size=max(vocab_size, len(characters) + 4),
    # BPE, not unigram: on the synthetic captions (20k scenes, vocabulary 512) unigram
    # stopped at ~100 pieces and split common words ("l ar ge", "wi th"), 29 tokens per
    # caption at the median; BPE keeps whole words, 19 tokens (measured 2026-11-27).
    model_type="bpe",
    character_coverage=1.0,
    pad_id=PAD_ID,
    unk_id=UNK_ID,
    bos_id=BOS_ID,
    eos_id=EOS_ID,
    hard_vocab_limit=False,
    num_threads=2,
    minloglevel=2,
  )
  spm.SentencePieceTrainer.train(**kwargs)
  with open(model_path, "wb") as f:
    f.write(proto.getvalue())


class TextTokenizer(Protocol):
  """What every tokenizer `load` returns offers: SentencePiece's `Tokenizer` and
  `inpainting.wordpiece.WordPiece`."""

  @property
  def vocab_size(self) -> int: ...

  def encode(self, captions: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """int32 ids [N, max_length] (0 = padding) and their bool validity mask."""
    ...

  def encode_segments(
    self, texts: Sequence[str], max_length: int
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`encode` plus each token's conversation part (PART_BREAK), int32 [N, max_length]."""
    ...

  def decode(self, tokens: np.ndarray) -> list[str]:
    """Texts of id rows, padding and special ids dropped."""
    ...


def load(path: str) -> TextTokenizer:
  """The tokenizer stored at `path`: a SentencePiece model (`train`'s), or a WordPiece
  vocab.txt (a pretrained caption encoder's; `inpainting.wordpiece.WordPiece`). Both give
  `encode`, `encode_segments`, `decode` and `vocab_size`."""
  with open(path, "rb") as f:
    head = f.read(len(_WORDPIECE_HEAD))
  if head == _WORDPIECE_HEAD:
    from inpainting.wordpiece import WordPiece  # noqa: PLC0415  (imports this module)

    return WordPiece(path)
  return Tokenizer(path)


# A BERT vocab.txt starts with its padding token (the project's id 0).
_WORDPIECE_HEAD = b"[PAD]"

# Words whose pieces `Tokenizer` remembers; past this many it encodes new words each time.
_WORD_MEMO_LIMIT = 1 << 18


class Tokenizer:
  """Encodes captions to fixed-length int32 ids plus a validity mask.

  Text is encoded a word at a time from a memo of each word's pieces, which gives the
  same ids as encoding the whole text: the models `train` writes split pieces at spaces
  (split_by_whitespace) and prefix every word with the space piece (add_dummy_prefix), and
  on printable ASCII their NFKC normalisation changes nothing. Other text, and every text
  of a model without those settings, is encoded whole. Captions repeat their words: on
  the synthetic conversations this takes encoding from 33 to 12 us per text
  (`benchmarks/RESULTS.md`).
  """

  def __init__(self, model_path: str):
    # One thread: sentencepiece would otherwise start a thread pool on every call, which
    # costs more than encoding a 64-caption batch (the pipeline already runs in threads).
    self._sp = spm.SentencePieceProcessor(model_file=model_path, num_threads=1)
    self._word_pieces: dict[str, list[int]] = {}
    model = sentencepiece_model_pb2.ModelProto.FromString(self._sp.serialized_model_proto())
    self._by_word = (
      model.trainer_spec.split_by_whitespace
      and model.normalizer_spec.add_dummy_prefix
      and model.normalizer_spec.remove_extra_whitespaces
      and not model.trainer_spec.treat_whitespace_as_suffix
      and model.normalizer_spec.name in ("nmt_nfkc", "nfkc", "identity")
    )

  def _pieces(self, texts: Sequence[str]) -> list[list[int]]:
    """The piece ids of each normalised text (no BOS or EOS): `self._sp.encode(texts)`."""
    memo = self._word_pieces
    out: list[list[int] | None] = [None] * len(texts)
    whole, new_words = [], set()
    for i, text in enumerate(texts):
      if not text:
        out[i] = []
      elif self._by_word and text.isascii() and text.isprintable():
        new_words.update(word for word in text.split(" ") if word not in memo)
      else:
        whole.append(i)
    if new_words:
      words = sorted(new_words)
      found = dict(zip(words, self._sp.encode(words, out_type=int)))
      if len(memo) < _WORD_MEMO_LIMIT:
        memo.update(found)  # dict updates are atomic under the GIL: threads may share it.
    else:
      found = {}
    if whole:
      for i, encoded in zip(whole, self._sp.encode([texts[i] for i in whole], out_type=int)):
        out[i] = encoded
    for i, text in enumerate(texts):
      if out[i] is None:
        out[i] = [
          piece
          for word in text.split(" ")
          for piece in (found[word] if word in found else memo[word])
        ]
    return out

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, captions: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Encodes a batch of captions.

    Args:
      captions: strings; an empty string encodes to all padding (the "no caption" input).
      max_length: output length; longer captions are truncated (EOS kept).

    Returns:
      (tokens int32 [N, max_length], mask bool [N, max_length]).
    """
    pieces = self._pieces([normalize(c) for c in captions])
    tokens = np.zeros((len(captions), max_length), np.int32)
    for i, (caption, ids) in enumerate(zip(captions, pieces)):
      if not caption.strip():
        continue
      ids = [BOS_ID, *ids[: max_length - 2], EOS_ID]
      tokens[i, : len(ids)] = ids
    return tokens, tokens != PAD_ID

  def encode_segments(
    self, texts: Sequence[str], max_length: int
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`encode` with each part (split at PART_BREAK) encoded on its own, plus each token's
    part number: int32 [N, max_length], 0 at padding; BOS is part 0, EOS the last kept
    token's part. Empty parts keep their number, so part t is always turn t."""
    tokens = np.zeros((len(texts), max_length), np.int32)
    segments = np.zeros((len(texts), max_length), np.int32)
    # Every non-empty part of the batch in one encode call (as fast as `encode`).
    where, parts = [], []
    for i, text in enumerate(texts):
      for number, part in enumerate(text.split(PART_BREAK)):
        if part.strip():
          where.append((i, number))
          parts.append(normalize(part))
    ids = [[BOS_ID] for _ in texts]
    numbers = [[0] for _ in texts]
    for (i, number), encoded in zip(where, self._pieces(parts)):
      ids[i] += encoded
      numbers[i] += [number] * len(encoded)
    for i, text in enumerate(texts):
      if not text.strip():
        continue
      kept, kept_numbers = ids[i][: max_length - 1], numbers[i][: max_length - 1]
      tokens[i, : len(kept) + 1] = [*kept, EOS_ID]
      segments[i, : len(kept) + 1] = [*kept_numbers, kept_numbers[-1]]
    return tokens, tokens != PAD_ID, segments

  def decode(self, tokens: np.ndarray) -> list[str]:
    return [self._sp.decode([int(t) for t in row if t > EOS_ID]) for row in np.asarray(tokens)]
