"""Records -> a model family's batch, without grain or jax.

The input pipeline (training and evaluation), `inpaint` and the demo all turn decoded
records into batches here, so a family sees the same fields however it is fed. A family
declares what it needs with a `BatchSpec`:

  device_keys   the fields that go to the accelerators (sharded over the batch axis);
  extra_fields  (examples, batch, tokenizer, max_caption_length) -> more fields, for
                families that read more of the record than one caption (a dialogue, a
                second caption, a sequence of targets).

The fields every batch has (leading axis b):

  image       float32 [b, 64, 64, 3] in [-1, 1]
  mask        float32 [b, 64, 64, 1], 1 = hole (see inpainting/masks.py)
  tokens      int32   [b, L], 0 = padding (L = data.max_caption_length)
  token_mask  bool    [b, L]
  id          np.str_ [b]   record ids                           (host only)
  caption     np.str_ [b]   the caption actually tokenised        (host only)
  scene       np.str_ [b]   scene JSON, "" for non-synthetic data (host only)
  segments    int32   [b, L]  each token's part of a conversation text: 0 = the context
                            caption (or the caption), t = turn t; only in the batches of
                            families whose device_keys name it (Tokenizer.encode_segments)
  reveals     np.str_ [b]   the dialogue's revealed attributes in turn order, comma-joined
                            ("shape,size,color"; "" without a dialogue)  (host only)
  index       int64   [b]   record index within the split         (host only)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from inpainting import images, records
from inpainting.tokenizer import PART_BREAK, TextTokenizer

CAPTION_KEYS = ("image", "mask", "tokens", "token_mask")
# How the pipeline picks the caption of each example (data.caption / evaluate's modes).
CAPTION_MODES = ("random", "first", "empty", "shuffled")
# What text stands in for "the caption" (data.text_source): one of the record's captions,
# or text built from its context caption and dialogue (records with a conversation).
#   caption      one of the captions (picked by the caption mode)
#   context      the context caption: the border and background, never the hole's object
#   dialogue     the context caption, then every turn ("question answer", in order)
#   dialogue:T   the context caption, then the first T turns (dialogue:0 = context)
#   turns        every turn without the context: only what the dialogue says of the hole
#   turns:T      the first T turns without the context
#   dialogue:any, turns:any   in training, each example's first T turns with T drawn
#                uniformly from 0..all (so partial conversations are seen); otherwise all
TEXT_SOURCES = (
  "caption",
  "context",
  "dialogue",
  "dialogue:T",
  "dialogue:any",
  "turns",
  "turns:T",
  "turns:any",
)


# data.text_source of runs saved before the knob existed (run.ADDED_KNOB_DEFAULTS).
DEFAULT_TEXT_SOURCE = "caption"


def text_source_of(data_config) -> str:
  """A data config's text_source; DEFAULT_TEXT_SOURCE for runs saved before the knob."""
  return data_config.get("text_source", DEFAULT_TEXT_SOURCE)


def reads_conversation(data_config) -> bool:
  """Whether a data config's text comes from the context caption and dialogue."""
  return parse_text_source(text_source_of(data_config))[0] != "caption"


def parse_text_source(source: str) -> tuple[str, int | None]:
  """(kind: caption | dialogue | turns, turns kept: None = all) of a data.text_source.

  Raises:
    ValueError: (one line) an unknown source.
  """
  if source in ("caption", "dialogue", "turns"):
    return source, None
  if source == "context":
    return "dialogue", 0
  kind, _, count = source.partition(":")
  if kind in ("dialogue", "turns") and count.isdigit():
    return kind, int(count)
  if kind in ("dialogue", "turns") and count == "any":
    return kind, None
  raise ValueError(f"unknown text source {source!r}; choose one of {', '.join(TEXT_SOURCES)}")


def draws_turns(source: str) -> bool:
  """Whether training reads a random prefix of each conversation (`...:any`)."""
  return source.endswith(":any")


def text_at_turn(source: str, turn: int) -> str:
  """The source that reads the first `turn` turns the way `source` reads its turns
  (a caption source reads them as `dialogue`)."""
  kind, _ = parse_text_source(source)
  return f"{'turns' if kind == 'turns' else 'dialogue'}:{turn}"


def conversation_text(example: records.Example, source: str, num_turns: int | None = None) -> str:
  """The text `source` (not "caption") makes of a record's context caption and dialogue;
  `num_turns` overrides how many turns it keeps (a drawn prefix, see `draws_turns`).

  The parts (context caption, then each turn as "question answer") are joined by
  PART_BREAK, which tokenisers read as a space; `turns` sources leave part 0 empty, so
  part t is turn t either way. `readable` gives the text as shown to people.

  Raises:
    ValueError: (one line) the record has no conversation.
  """
  kind, kept = parse_text_source(source)
  num_turns = kept if num_turns is None else num_turns
  if not example.context_caption:
    raise ValueError(
      f"data.text_source={source!r} needs records with a context caption and dialogue "
      f"(synthetic format 3 or visdial); record {example.id!r} has none"
    )
  turns = example.dialogue if num_turns is None else example.dialogue[:num_turns]
  said = [f"{turn['question']} {turn['answer']}" for turn in turns]
  return PART_BREAK.join(["" if kind == "turns" else example.context_caption, *said])


def readable(text: str) -> str:
  """A caption or conversation text with its part breaks shown as spaces."""
  return " ".join(part for part in text.split(PART_BREAK) if part.strip())


# Words per text that `perturb_words` may touch (later words are kept as they are).
MAX_PERTURBED_WORDS = 64


def perturb_words(
  texts: Sequence[str], uniforms: np.ndarray, word_dropout: float, word_swap: float
) -> list[str]:
  """Word noise for training texts (EDA's random deletion and swap, Wei & Zou 2019).

  Each word is dropped with probability `word_dropout` (a part keeps at least one word);
  then, left to right, each pair of neighbouring words is swapped with probability
  `word_swap` (a word that moved is not swapped again). Words stay inside their part of a
  conversation text (PART_BREAK). Punctuation moves with its word.

  Args:
    texts: n texts.
    uniforms: float [n, 2 * MAX_PERTURBED_WORDS] in [0, 1): the first half decides
      deletions, the second half swaps, by word position in the text.
  """
  out = []
  for text, u in zip(texts, uniforms):
    drop_u, swap_u = u[:MAX_PERTURBED_WORDS], u[MAX_PERTURBED_WORDS:]
    parts, start = [], 0
    for part in text.split(PART_BREAK):
      words = part.split()
      n = max(0, min(len(words), MAX_PERTURBED_WORDS - start))
      keep = drop_u[start : start + n] >= word_dropout
      if n and not keep.any():
        keep[int(np.argmax(drop_u[start : start + n]))] = True
      kept = [w for w, k in zip(words, keep) if k]
      i = 0
      while i < len(kept) - 1:
        if swap_u[start + i] < word_swap:
          kept[i], kept[i + 1] = kept[i + 1], kept[i]
          i += 2
        else:
          i += 1
      parts.append(" ".join(kept + words[n:]))
      start += n
    out.append(PART_BREAK.join(parts))
  return out


ExtraFields = Callable[
  [Sequence[records.Example], dict[str, np.ndarray], TextTokenizer, int], dict[str, np.ndarray]
]


@dataclasses.dataclass(frozen=True)
class BatchSpec:
  """Which batch fields a family reads (see the module docstring)."""

  device_keys: tuple[str, ...] = CAPTION_KEYS
  extra_fields: ExtraFields | None = None


DEFAULT_SPEC = BatchSpec()  # Image, hole and one caption: what the caption families read.


def tokenize(
  texts: Sequence[str], tokenizer: TextTokenizer, max_length: int, spec: BatchSpec
) -> dict[str, np.ndarray]:
  """{"tokens", "token_mask"} of `texts`, plus "segments" (each token's conversation part)
  for a family whose device_keys name it."""
  if "segments" in spec.device_keys:
    tokens, token_mask, segments = tokenizer.encode_segments(texts, max_length)
    return {"tokens": tokens, "token_mask": token_mask, "segments": segments}
  tokens, token_mask = tokenizer.encode(list(texts), max_length)
  return {"tokens": tokens, "token_mask": token_mask}


def assemble(
  examples: Sequence[records.Example],
  pixels: np.ndarray,
  mask: np.ndarray,
  captions: Sequence[str],
  tokenizer: TextTokenizer,
  max_caption_length: int,
  spec: BatchSpec,
  index: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
  """One batch from decoded examples.

  Args:
    examples: the records, in batch order.
    pixels: uint8 [b, H, W, 3], the examples' images after any augmentation.
    mask: float32 [b, H, W, 1], 1 = hole.
    captions: the caption chosen for each example ("" = none).
    tokenizer, max_caption_length: how captions become tokens.
    spec: the family's BatchSpec.
    index: record indices within the split (default: 0..b-1).
  """
  batch = {
    **tokenize(captions, tokenizer, max_caption_length, spec),
    "image": images.to_float(pixels),
    "mask": np.asarray(mask, np.float32),
    "id": np.array([e.id for e in examples], dtype=np.str_),
    "caption": np.array([readable(c) for c in captions], dtype=np.str_),
    "scene": np.array([e.scene_text() for e in examples], dtype=np.str_),
    "reveals": np.array(
      [",".join(turn.get("reveals", "") for turn in e.dialogue) for e in examples], dtype=np.str_
    ),
    "index": np.arange(len(examples), dtype=np.int64) if index is None else index,
  }
  if spec.extra_fields is not None:
    batch.update(spec.extra_fields(examples, batch, tokenizer, max_caption_length))
  return batch


def from_image(
  pixels: np.ndarray,
  mask: np.ndarray,
  captions: Sequence[str],
  tokenizer: TextTokenizer,
  max_caption_length: int,
  spec: BatchSpec,
) -> dict[str, np.ndarray]:
  """A batch of one user image (uint8 [H, W, 3]) and its hole (float [H, W, 1]).

  `captions` are the user's captions, the first one tokenised as the caption; families
  with extra fields read the rest through `extra_fields` like any record's captions.
  """
  example = records.Example(id="input", image=pixels, captions=list(captions))
  first = captions[0] if captions else ""
  return assemble([example], pixels[None], mask[None], [first], tokenizer, max_caption_length, spec)
