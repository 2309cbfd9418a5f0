"""Google Quick, Draw! simplified drawings: a folder of `<word>.ndjson` files.

Each line is one JSON object with `word`, `countrycode`, `recognized`, `key_id` and
`drawing` (a list of strokes [[x...], [y...]] in a 0..255 box); file names may contain
spaces ("The Eiffel Tower.ndjson"). Every drawing is rasterised to 64x64 by
`inpainting.strokes` (anti-aliased dark lines of `--line_width` pixels on white, grey RGB),
captioned "a drawing of a {word}" plus paraphrases, and its word is kept as the record's
`label`.

`--classes=cat,sheep` keeps those words (each must have a file). The split is per class:
within each word, the VALIDATION_FRACTION of drawings with the smallest seeded hashes of
their key_id validate, so every class is in both splits in the same proportion and the same
seed gives the same split. With `--augment=K`, each train drawing is also written K times
with random stroke scaling and rotation (sketch-rnn's augmentation, seeded by the drawing).

Skipped, counted by reason: lines that are not valid UTF-8 (invalid_utf8), not a JSON
object with the fields above, or whose word is not the file's (malformed_row); drawings
without points (empty_drawing); coordinates outside 0..255 (out_of_range); a key_id seen
before (duplicate_id).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any

from data_prep import core
from inpainting import strokes

PREPROCESSING = (
  "strokes rasterised to 64x64 by inpainting.strokes: bounding box fitted with its aspect "
  "ratio, anti-aliased dark lines on white, grey RGB"
)
EXTENSION = ".ndjson"
VALIDATION_FRACTION = 0.2  # 5 of QuickDraw-344x25's 25 drawings per class.
_STROKE_SKIPS = {
  strokes.MALFORMED: core.MALFORMED_ROW,
  strokes.EMPTY: core.EMPTY_DRAWING,
  strokes.OUT_OF_RANGE: core.OUT_OF_RANGE,
}


def wanted_classes(options: core.Options) -> list[str]:
  """The --classes words, stripped, in order, without repeats."""
  words = [" ".join(w.split()) for w in options.classes.split(",")]
  return list(dict.fromkeys(w for w in words if w))


def _files(input_dir: str, classes: list[str]) -> dict[str, str]:
  """word -> path of its .ndjson file (all of them, or the requested classes)."""
  found = {
    entry.name[: -len(EXTENSION)]: entry.path
    for entry in os.scandir(input_dir)
    if entry.is_file() and entry.name.endswith(EXTENSION)
  }
  if not classes:
    return dict(sorted(found.items()))
  missing = [word for word in classes if word not in found]
  if missing:
    raise core.PrepareError(
      f"no {', '.join(repr(w + EXTENSION) for w in missing)} in {input_dir} "
      f"({len(found)} classes there)"
    )
  return {word: found[word] for word in classes}


def _hash_rank(seed: int, key: str) -> bytes:
  return hashlib.sha256(f"{seed}\0{key}".encode("utf-8", "surrogateescape")).digest()


def split_keys(keys: list[str], seed: int) -> tuple[set[str], set[str]]:
  """(train, validation) key sets of one class: the VALIDATION_FRACTION with the smallest
  seeded hashes validate (at least one, when the class has two or more drawings)."""
  ranked = sorted(keys, key=lambda key: _hash_rank(seed, key))
  num_validation = round(VALIDATION_FRACTION * len(keys))
  if len(keys) >= 2:
    num_validation = min(max(num_validation, 1), len(keys) - 1)
  return set(ranked[num_validation:]), set(ranked[:num_validation])


def read_drawings(
  word: str, path: str, skips: core.Skips, seen: set[str]
) -> list[tuple[str, strokes.Strokes]]:
  """(key_id, strokes) of the usable lines of one file; the rest are counted skips."""
  name = os.path.basename(path)
  out = []
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      where = f"{name} line {number}"
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError:
        skips.add(core.INVALID_UTF8, where)
        continue
      if not line.strip():
        continue
      try:
        entry: Any = json.loads(line)
      except ValueError:
        skips.add(core.MALFORMED_ROW, f"{where} (not JSON)")
        continue
      if not isinstance(entry, dict) or not all(k in entry for k in ("word", "key_id", "drawing")):
        skips.add(core.MALFORMED_ROW, f"{where} (not an object with word, key_id, drawing)")
        continue
      key, line_word = entry["key_id"], entry["word"]
      if not isinstance(key, str | int) or isinstance(key, bool) or not str(key):
        skips.add(core.MALFORMED_ROW, f"{where} (key_id {key!r})")
        continue
      if not isinstance(line_word, str) or " ".join(line_word.split()) != word:
        skips.add(core.MALFORMED_ROW, f"{where} (word {line_word!r} in the file of {word!r})")
        continue
      key = str(key)
      if key in seen:
        skips.add(core.DUPLICATE_ID, f"{where} (key_id {key})")
        continue
      try:
        drawing = strokes.from_quickdraw(entry["drawing"])
      except strokes.StrokeError as error:
        skips.add(_STROKE_SKIPS[error.reason], f"{where} ({error})")
        continue
      seen.add(key)
      out.append((key, drawing))
  return out


def items_of_class(
  word: str, drawings: list[tuple[str, strokes.Strokes]], options: core.Options
) -> dict[str, list[core.Item]]:
  """Train and validation items of one class (train with its augmented copies)."""
  train, validation = split_keys([key for key, _ in drawings], options.seed)
  captions = tuple(strokes.captions(word))
  items: dict[str, list[core.Item]] = {"train": [], "validation": []}
  for key, drawing in drawings:
    split = "train" if key in train else "validation"
    record_id = f"{word}/{key}"
    render = functools.partial(strokes.render, drawing, options.line_width)
    items[split].append(core.Item(record_id, captions, render=render, label=word))
    if split == "train":
      for k in range(1, options.augment + 1):
        seed = augment_seed(options.seed, record_id, k)
        render = functools.partial(strokes.render, drawing, options.line_width, seed)
        items[split].append(core.Item(f"{record_id}#aug{k}", captions, render=render, label=word))
  return items


def augment_seed(seed: int, record_id: str, copy: int) -> tuple[int, ...]:
  """The augmentation seed of one copy: a hash of (seed, drawing, copy)."""
  digest = _hash_rank(seed, f"{record_id}\0{copy}")
  return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


def collect(input_dir: str, options: core.Options, skips: core.Skips) -> dict[str, list[core.Item]]:
  files = _files(input_dir, wanted_classes(options))
  if not files:
    raise core.PrepareError(f"no {EXTENSION} files in {input_dir}")
  items: dict[str, list[core.Item]] = {"train": [], "validation": []}
  seen: set[str] = set()
  for word, path in files.items():
    for split, found in items_of_class(
      word, read_drawings(word, path, skips, seen), options
    ).items():
      items[split].extend(found)
  return items


def extra_metadata(options: core.Options) -> dict[str, Any]:
  return {
    "drawings": {
      "classes": wanted_classes(options) or "all",
      "line_width": options.line_width,
      "augment": options.augment,
      "validation_fraction": VALIDATION_FRACTION,
      "caption_templates": list(strokes.CAPTION_TEMPLATES),
    }
  }
