"""Visual Dialog 1.0 conversations joined to MS-COCO 2014 images, as ChatPainter did.

Layout (`--input` is one folder):

    visdial_1.0_train.json           -> train split
    visdial_1.0_val.json             -> validation split
    train2014/*.jpg, val2014/*.jpg   the COCO images; an image is found by its id in
                                     either folder, whichever VisDial file names it
                                     (COCO_train2014_000000000009.jpg is image 9)
    annotations/                     COCO's own captions: not read

A VisDial file is {"version", "split", "data": {"questions": [str, ...], "answers": [str,
...], "dialogs": [{"image_id": int, "caption": str, "dialog": [{"question": index into
questions, "answer": index into answers, "answer_options", "gt_index"}, ... 10 rounds]},
...]}}. Each dialog becomes one record: its image (centre-cropped and resized to 64x64 as
for COCO), its caption as the record's one caption, and its rounds, in order, as the
dialogue: {"question", "answer", "reveals": ""} (real conversations do not say which
attribute a turn reveals). Record ids are the image file stems, as for the coco source.

A dialog is skipped, counted by reason, never fatal: malformed_row (not an object, an
image_id that is not an integer, a caption that is not text, no rounds, a round that is
not an object or lacks an integer question or answer index), out_of_range (an index
outside the questions or answers list), invalid_utf8, empty_caption, duplicate_id (an
image that an earlier dialog already used), missing_image (no file for the id), and, when
the file is read, grayscale and corrupt_image. Images that no dialog names are not records
and not skips. A file that is not JSON or lacks the `data` lists stops the run.

VisDial 1.0's own validation images come from Flickr (VisualDialog_val2018/), not COCO:
with the official val file, its dialogs whose ids have no COCO file are counted as
missing_image (ChatPainter used VisDial 0.9, whose train and val are both COCO images).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from data_prep import core

PREPROCESSING = core.RESIZE_NOTE
SPLITS = {"train": "visdial_1.0_train.json", "validation": "visdial_1.0_val.json"}
IMAGE_FOLDERS = ("train2014", "val2014")
_TRAILING_ID = re.compile(r"(\d+)$")  # COCO_train2014_000000000009 -> 9.


def _read_json(path: str) -> dict[str, Any]:
  """The `data` object of a VisDial file. Undecodable bytes survive as lone surrogates, so
  that only the dialog that uses them is skipped (as invalid_utf8)."""
  with open(path, "rb") as f:
    text = f.read().decode("utf-8", "surrogateescape")
  try:
    content = json.loads(text)
  except json.JSONDecodeError as error:
    raise core.PrepareError(f"{path} is not valid JSON: {error}") from None
  data = content.get("data") if isinstance(content, dict) else None
  if not isinstance(data, dict) or not all(
    isinstance(data.get(key), list) for key in ("questions", "answers", "dialogs")
  ):
    raise core.PrepareError(
      f"{path} lacks the VisDial 'data' object with 'questions', 'answers' and 'dialogs' lists"
    )
  return data


def index_images(input_dir: str) -> dict[int, tuple[str, str]]:
  """COCO image id -> (file stem, path), over every image folder present (the first
  folder wins if an id appears twice)."""
  folders = [os.path.join(input_dir, name) for name in IMAGE_FOLDERS]
  if not any(os.path.isdir(folder) for folder in folders):
    raise core.PrepareError(
      f"no COCO image folder in {input_dir} (expected {' or '.join(IMAGE_FOLDERS)})"
    )
  by_id: dict[int, tuple[str, str]] = {}
  for folder in folders:
    if not os.path.isdir(folder):
      continue
    for stem, path in core.list_images(folder):
      match = _TRAILING_ID.search(stem)
      if match:
        by_id.setdefault(int(match.group(1)), (stem, path))
  return by_id


def _is_index(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


class _Skip(Exception):
  """A dialog to skip: (reason, detail)."""


def _text(texts: list[Any], index: Any, what: str) -> str:
  """texts[index], whitespace-normalised; raises _Skip when it cannot be used."""
  if not _is_index(index):
    raise _Skip(core.MALFORMED_ROW, f"{what} index {index!r} is not an integer")
  if not 0 <= index < len(texts):
    raise _Skip(core.OUT_OF_RANGE, f"{what} index {index} not in [0, {len(texts)})")
  text = texts[index]
  if not isinstance(text, str):
    raise _Skip(core.MALFORMED_ROW, f"{what} {index} is not text")
  if not core.is_utf8(text):
    raise _Skip(core.INVALID_UTF8, f"{what} {index}")
  return " ".join(text.split())


def _dialogue(rounds: Any, data: dict[str, Any]) -> tuple[dict[str, str], ...]:
  """The rounds as turns; raises _Skip for the first unusable round."""
  if not isinstance(rounds, list) or not rounds:
    raise _Skip(core.MALFORMED_ROW, "no list of rounds")
  turns = []
  for r, entry in enumerate(rounds):
    if not isinstance(entry, dict) or "question" not in entry or "answer" not in entry:
      raise _Skip(core.MALFORMED_ROW, f"round {r} lacks a question or an answer")
    try:
      question = _text(data["questions"], entry["question"], "question")
      answer = _text(data["answers"], entry["answer"], "answer")
    except _Skip as skip:
      reason, detail = skip.args
      raise _Skip(reason, f"round {r}: {detail}") from None
    turns.append({"question": question, "answer": answer, "reveals": ""})
  return tuple(turns)


def _caption(caption: Any) -> str:
  if not isinstance(caption, str):
    raise _Skip(core.MALFORMED_ROW, "caption is not text")
  if not core.is_utf8(caption):
    raise _Skip(core.INVALID_UTF8, "caption")
  caption = " ".join(caption.split())
  if not caption:
    raise _Skip(core.EMPTY_CAPTION, "caption")
  return caption


def collect(input_dir: str, options: core.Options, skips: core.Skips) -> dict[str, list[core.Item]]:
  del options  # Nothing source-specific.
  paths = {
    split: core.require_file(os.path.join(input_dir, name)) for split, name in SPLITS.items()
  }
  images = index_images(input_dir)
  seen: set[int] = set()
  items: dict[str, list[core.Item]] = {}
  for split, path in paths.items():
    data = _read_json(path)
    name = os.path.basename(path)
    items[split] = []
    for i, dialog in enumerate(data["dialogs"]):
      where = f"{name} dialogs[{i}]"
      try:
        if not isinstance(dialog, dict) or not _is_index(dialog.get("image_id")):
          raise _Skip(core.MALFORMED_ROW, "no integer image_id")
        image_id = dialog["image_id"]
        where += f" (image {image_id})"
        caption = _caption(dialog.get("caption"))
        dialogue = _dialogue(dialog.get("dialog"), data)
        if image_id in seen:
          raise _Skip(core.DUPLICATE_ID, "an earlier dialog has this image")
        seen.add(image_id)
        if image_id not in images:
          raise _Skip(core.MISSING_IMAGE, f"no file for it in {' or '.join(IMAGE_FOLDERS)}")
      except _Skip as skip:
        reason, detail = skip.args
        skips.add(reason, f"{where}: {detail}")
        continue
      stem, image_path = images[image_id]
      items[split].append(core.Item(stem, (caption,), path=image_path, dialogue=dialogue))
  return items
