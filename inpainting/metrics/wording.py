"""Held-out caption wordings for the synthetic scenes: NEVER used for training.

The generator's own templates are `scenes._TEMPLATES` with the centre phrases of
`scenes.CENTER_FORMS`; every training caption comes from them. They vary the clause order
and the attribute order, but a model can still learn those fixed patterns without
understanding the words. `HELDOUT_TEMPLATES` say the same thing in ways the generator never
does (`scenes.possible_captions` is checked in tests/test_wording.py): other connecting
words, two attribute orders that no centre form has (colour-size-shape, shape-colour-size),
the attributes split across clauses, "near the ..." for places, the centre object alone.
`evaluate --heldout_wording` captions each validation scene with one of them (the
"reworded" condition) and scores compliance exactly as with the true captions. A caption
that the run's caption length would cut before the centre object's last attribute names
less context, or the next template is used (`fitting_caption`): the condition tests the
wording, not truncation.

The words are the generator's vocabulary plus a few common ones, spelt with the letters and
punctuation of the generator's captions (no "v", "j", ":" or brackets), so a run's
SentencePiece tokenizer covers them without unknown tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from inpainting import scenes as scenes_lib

# Fields: {center} = "a {size} {color} {shape}" (the centre object); {size}, {color},
# {shape} its attributes alone; {context} one or two border objects, with where they are
# when that fits ("a small red star near the top left"; see `candidates`).
HELDOUT_TEMPLATES = (
  "{context}; {center}",  # Context first, no location word.
  "{color} {shape}, {size}, in the middle",  # Attributes reordered.
  "the {shape} in the centre is {color} and {size}",  # Attributes after the noun.
  "{center}",  # The centre object alone.
  "by {context}, {center}",  # Context first.
  "a {shape}, {size} and {color}, with {context}",  # Reordered, no location word.
  "look at the {size} {shape}; it is {color}",  # Split, no location word.
  "one {color} {size} {shape} and {context}",  # Colour before size, no location word.
  "{size} {shape} coloured {color}",  # Split, no location word, no context.
  "this image shows {center} that is not at the border, and {context}",  # Described by negation.
)
# Context variants, most detailed first: (border objects named, with their places).
_CONTEXT_VARIANTS = ((2, True), (1, True), (2, False), (1, False))
_CENTER_FIELDS = ("center", "size", "color", "shape")


def _describe(obj: dict[str, Any]) -> str:
  return f"a {obj['size']} {obj['color']} {obj['shape']}"


def _where(obj: dict[str, Any]) -> str:
  """A border object's place in words the generator does not use ("near the top left")."""
  third = scenes_lib.IMAGE_SIZE / 3
  row = "top" if obj["y"] < third else "bottom" if obj["y"] > 2 * third else ""
  column = "left" if obj["x"] < third else "right" if obj["x"] > 2 * third else ""
  return f"near the {' '.join(p for p in (row, column) if p) or 'edge'}"


def candidates(
  scene: dict[str, Any], index: int, seed: int = 0, templates: Sequence[str] = HELDOUT_TEMPLATES
) -> Iterator[tuple[str, str]]:
  """Held-out captions of `scene`, in order of preference, each with its prefix up to the
  last word about the centre object (what must survive the model's caption length).

  Example `index` prefers template (index + seed) % len(templates), so consecutive
  examples cycle through all of them, with the richest context first (two border objects
  and their places, then one, then without places); then the next template, and so on.
  """
  center, border = scene["objects"][0], scene["objects"][1:]
  order = [border[i] for i in np.random.default_rng([seed, index]).permutation(len(border))]
  fields = {name: center[name] for name in ("size", "color", "shape")}
  fields["center"] = _describe(center)
  for step in range(len(templates)):
    template = templates[(index + seed + step) % len(templates)]
    # Up to the last centre field; then to the end of that word (punctuation attached to
    # a word may change how it is split into pieces).
    last = max(
      template.find(f"{{{f}}}") + len(f) + 2 for f in _CENTER_FIELDS if f"{{{f}}}" in template
    )
    variants = _CONTEXT_VARIANTS if "{context}" in template else _CONTEXT_VARIANTS[:1]
    for count, places in variants:
      fields["context"] = " and ".join(
        f"{_describe(o)} {_where(o)}" if places else _describe(o) for o in order[:count]
      )
      text = template.format(**fields)
      prefix = template[:last].format(**fields)
      yield text, prefix + text[len(prefix) :].split(" ", 1)[0]


def caption(
  scene: dict[str, Any], index: int, seed: int = 0, templates: Sequence[str] = HELDOUT_TEMPLATES
) -> str:
  """The preferred held-out caption of `scene` (deterministic in `index` and `seed`)."""
  return next(candidates(scene, index, seed, templates))[0]


def fitting_caption(
  scene: dict[str, Any],
  index: int,
  tokenizer,
  max_caption_length: int,
  seed: int = 0,
  templates: Sequence[str] = HELDOUT_TEMPLATES,
) -> str:
  """The first of `candidates` whose words about the centre object all survive tokenisation
  to `max_caption_length` (BOS and EOS included), so that the model is asked about the
  wording, not about a caption cut before the centre object. With the main config's 24
  tokens the context-first templates mostly name one border object without its place.
  The preferred caption if none fits."""
  options = list(candidates(scene, index, seed, templates))
  _, prefix_mask = tokenizer.encode([prefix for _, prefix in options], 4 * max_caption_length)
  for (text, _), mask in zip(options, prefix_mask):
    if mask.sum() <= max_caption_length:
      return text
  return options[0][0]


def reword_batch(
  batch: dict[str, np.ndarray],
  tokenizer,
  max_caption_length: int,
  seed: int = 0,
  templates: Sequence[str] = HELDOUT_TEMPLATES,
) -> dict[str, np.ndarray]:
  """A copy of a batch whose caption is a held-out caption of each example's own scene.

  `caption`, `tokens` and `token_mask` are replaced (`fitting_caption`, tokenised with
  `tokenizer` as the pipeline does); the example's record index picks the template.
  Fields a family adds from a record's other captions are left as they are.

  Raises:
    ValueError: an example without a scene (not a synthetic scene).
  """
  if any(not s for s in batch["scene"]):
    raise ValueError("held-out wording needs synthetic scenes; this data has no scene")
  captions = [
    fitting_caption(json.loads(s), int(i), tokenizer, max_caption_length, seed, templates)
    for s, i in zip(batch["scene"], batch["index"])
  ]
  tokens, token_mask = tokenizer.encode(captions, max_caption_length)
  out = dict(batch)
  out.update(caption=np.array(captions, dtype=np.str_), tokens=tokens, token_mask=token_mask)
  return out


def batches(
  data_dir: str,
  split: str,
  data_config,
  tokenizer_path: str,
  limit: int,
  batch_size: int,
  *,
  spec=None,
  seed: int = 0,
  templates: Sequence[str] = HELDOUT_TEMPLATES,
) -> Iterator[dict[str, np.ndarray]]:
  """Batches of the first `limit` examples of a prepared synthetic split, in record order,
  each captioned with a held-out template and tokenised with the tokenizer at
  `tokenizer_path` (a run's own: `run.tokenizer_path(workdir)`).

  `data_config` is the run's `config.data` (mask, caption length); `spec` the family's
  `batching.BatchSpec` (default: image, hole and one caption).
  """
  from inpainting import batching, input_pipeline  # noqa: PLC0415
  from inpainting import tokenizer as tokenizers  # noqa: PLC0415

  dataset = input_pipeline.create_dataset(
    data_dir,
    split,
    data_config,
    batch_size,
    seed=0,
    train=False,
    caption_mode="first",
    spec=spec or batching.DEFAULT_SPEC,
    tokenizer_path=tokenizer_path,
  )
  tokenizer = tokenizers.load(tokenizer_path)
  for batch in input_pipeline.first_examples(dataset, limit):
    yield reword_batch(batch, tokenizer, data_config.max_caption_length, seed, templates)
