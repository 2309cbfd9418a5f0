"""Flickr8k-style folders: `images/*.jpg` plus `captions.txt`.

captions.txt is CSV with a header `image,caption` and one row per caption (several per
image); captions may hold commas and quotes. The files carry no split, so images are
split 90/10 by a seeded hash of their names: the same seed always gives the same split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re

from data_prep import core

PREPROCESSING = core.RESIZE_NOTE
CAPTIONS_FILE = "captions.txt"
VALIDATION_FRACTION = 0.1
_TOKEN_SUFFIX = re.compile(r"#\d+$")  # Flickr8k.token.txt style "name.jpg#0".


def split_names(names: list[str], seed: int) -> tuple[list[str], list[str]]:
  """Deterministic (train, validation) split: the 10 % with the smallest hashes validate."""
  ranked = sorted(
    names,
    key=lambda name: hashlib.sha256(f"{seed}\0{name}".encode("utf-8", "surrogateescape")).digest(),
  )
  num_validation = round(VALIDATION_FRACTION * len(names))
  if len(names) >= 2:
    num_validation = min(max(num_validation, 1), len(names) - 1)
  return sorted(ranked[num_validation:]), sorted(ranked[:num_validation])


def read_captions(path: str, skips: core.Skips) -> core.Captions:
  """Parses captions.txt with the csv module; each caption is decoded strictly on its own."""
  with open(path, "rb") as f:
    text = f.read().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
  captions = core.Captions(skips)
  reader = csv.reader(io.StringIO(text, newline=""))
  try:
    for row_number, row in enumerate(reader, start=1):
      if row_number == 1 and [cell.strip().lower() for cell in row] == ["image", "caption"]:
        continue
      if not any(cell.strip() for cell in row):
        continue
      where = f"{CAPTIONS_FILE} line {reader.line_num}"
      if len(row) < 2:
        skips.add(core.MALFORMED_ROW, where)
        continue
      name = _TOKEN_SUFFIX.sub("", row[0].strip())
      captions.add(os.path.splitext(name)[0], ",".join(row[1:]), where)
  except csv.Error as error:
    raise core.PrepareError(f"{path}: bad CSV at line {reader.line_num}: {error}") from None
  return captions


def collect(input_dir: str, options: core.Options, skips: core.Skips) -> dict[str, list[core.Item]]:
  images = core.list_images(os.path.join(input_dir, "images"))
  captions = read_captions(core.require_file(os.path.join(input_dir, CAPTIONS_FILE)), skips)
  by_name = {os.path.basename(path): (image_id, path) for image_id, path in images}
  train, validation = split_names(list(by_name), options.seed)
  splits = {"train": train, "validation": validation}
  return core.assemble(
    {split: [by_name[name] for name in names] for split, names in splits.items()}, captions, skips
  )
