"""Official MS-COCO 2014 captions: JSON annotations plus full-resolution image folders.

Layout:

    annotations/captions_train2014.json    {"images": [{"id", "file_name"}, ...],
    annotations/captions_val2014.json       "annotations": [{"image_id", "caption"}, ...]}
    train2014/*.jpg                        -> train split
    val2014/*.jpg                          -> validation split

Images are centre-cropped to a square and resized to 64x64 with PIL's Lanczos filter
(antialiased). Record ids are file stems (COCO_train2014_000000000009), as in the course
archive.
"""

from __future__ import annotations

import json
import os
from typing import Any

from data_prep import core

PREPROCESSING = core.RESIZE_NOTE
SPLITS = {
  "train": ("annotations/captions_train2014.json", "train2014"),
  "validation": ("annotations/captions_val2014.json", "val2014"),
}


def _read_json(path: str) -> dict[str, Any]:
  """Reads an annotation file; undecodable bytes survive as lone surrogates, so that
  `core.Captions` can skip the one caption that holds them instead of the whole file."""
  with open(path, "rb") as f:
    text = f.read().decode("utf-8", "surrogateescape")
  try:
    data = json.loads(text)
  except json.JSONDecodeError as error:
    raise core.PrepareError(f"{path} is not valid JSON: {error}") from None
  if (
    not isinstance(data, dict)
    or not isinstance(data.get("images"), list)
    or not isinstance(data.get("annotations"), list)
  ):
    raise core.PrepareError(f"{path} lacks the COCO 'images' and 'annotations' lists")
  return data


def collect(input_dir: str, options: core.Options, skips: core.Skips) -> dict[str, list[core.Item]]:
  del options  # Nothing source-specific.
  captions = core.Captions(skips)
  images: dict[str, list[tuple[str, str]]] = {}
  for split, (annotations_file, folder_name) in SPLITS.items():
    folder = core.require_dir(os.path.join(input_dir, folder_name))
    data = _read_json(core.require_file(os.path.join(input_dir, annotations_file)))
    name = os.path.basename(annotations_file)
    stems: dict[Any, str] = {}  # COCO image id -> file stem.
    images[split] = []
    for i, entry in enumerate(data["images"]):
      file_name = entry.get("file_name") if isinstance(entry, dict) else None
      # A bare file name only: never a path that leaves the image folder.
      if (
        not isinstance(file_name, str)
        or os.path.basename(file_name) != file_name
        or file_name.startswith(".")
      ):
        skips.add(core.MALFORMED_ROW, f"{name} images[{i}]")
        continue
      if entry.get("id") in stems:
        skips.add(core.DUPLICATE_ID, f"{name} images[{i}] (id {entry.get('id')})")
        continue
      stems[entry.get("id")] = os.path.splitext(file_name)[0]
      images[split].append((stems[entry.get("id")], os.path.join(folder, file_name)))
    unknown: dict[Any, int] = {}
    for i, entry in enumerate(data["annotations"]):
      if not isinstance(entry, dict) or not isinstance(entry.get("caption"), str):
        skips.add(core.MALFORMED_ROW, f"{name} annotations[{i}]")
      elif entry.get("image_id") not in stems:
        unknown[entry.get("image_id")] = unknown.get(entry.get("image_id"), 0) + 1
      else:
        captions.add(stems[entry["image_id"]], entry["caption"], f"{name} annotations[{i}]")
    for image_id, count in unknown.items():
      skips.add(
        core.MISSING_IMAGE, f"{name} image id {image_id} ({count} caption(s), image not listed)"
      )
    # Files the annotations do not list have no captions.
    listed = {os.path.basename(path) for _, path in images[split]}
    images[split] += [
      (stem, path)
      for stem, path in core.list_images(folder)
      if os.path.basename(path) not in listed
    ]
  return core.assemble(images, captions, skips)
