"""The IFT6266 course archive of MS-COCO 2014: 64x64 JPEGs plus a pickled caption dict.

Layout:

    train2014/COCO_train2014_000000000009.jpg, ...   -> train split
    val2014/COCO_val2014_000000000042.jpg, ...       -> validation split
    dict_key_imgID_value_caps_train_and_valid.pkl    {file stem: [caption, ...]}
    worddict.pkl                                     ignored

The pickle is read with an unpickler that refuses every class and function, so a file
that tries to run code (e.g. `os.system` through `__reduce__`) is rejected, never executed.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

from data_prep import core

PREPROCESSING = f"none for 64x64 images; any other size: {core.RESIZE_NOTE}"
CAPTIONS_FILE = "dict_key_imgID_value_caps_train_and_valid.pkl"
SPLIT_FOLDERS = {"train": "train2014", "validation": "val2014"}
_PLAIN_TYPES = (dict, list, tuple, str, bytes, int, float, bool, type(None))


class _DataOnlyUnpickler(pickle.Unpickler):
  """Builds only what pickle's own opcodes make (dicts, lists, strings, numbers...)."""

  def find_class(self, module: str, name: str) -> Any:
    raise pickle.UnpicklingError(f"it references {module}.{name}")

  def persistent_load(self, pid: Any) -> Any:
    raise pickle.UnpicklingError("it uses persistent ids")


def _check_plain(value: Any) -> None:
  if not isinstance(value, _PLAIN_TYPES):
    raise pickle.UnpicklingError(f"it holds a {type(value).__name__}")
  if isinstance(value, dict):
    for key, item in value.items():
      _check_plain(key)
      _check_plain(item)
  elif isinstance(value, list | tuple):
    for item in value:
      _check_plain(item)


def load_pickle(path: str) -> Any:
  """Loads a pickle of plain data only; anything else raises PrepareError (one line)."""
  try:
    with open(path, "rb") as f:
      # encoding="bytes": Python 2 strings arrive as bytes, decoded strictly per caption.
      value = _DataOnlyUnpickler(f, encoding="bytes").load()
    _check_plain(value)
  except pickle.UnpicklingError as error:
    raise core.PrepareError(f"refusing {path}: not a plain-data pickle ({error})") from None
  except Exception as error:  # Truncated or garbage files.
    raise core.PrepareError(f"cannot read {path}: {type(error).__name__}: {error}") from None
  return value


def collect(input_dir: str, options: core.Options, skips: core.Skips) -> dict[str, list[core.Item]]:
  del options  # Nothing source-specific.
  folders = {
    split: core.require_dir(os.path.join(input_dir, name)) for split, name in SPLIT_FOLDERS.items()
  }
  table = load_pickle(core.require_file(os.path.join(input_dir, CAPTIONS_FILE)))
  if not isinstance(table, dict):
    raise core.PrepareError(f"{CAPTIONS_FILE} holds a {type(table).__name__}, expected a dict")
  captions = core.Captions(skips)
  for key, texts in table.items():
    where = f"{CAPTIONS_FILE}[{key!r}]"
    if isinstance(key, bytes):
      key = key.decode("utf-8", "surrogateescape")
    if isinstance(texts, str | bytes):
      texts = [texts]
    if not isinstance(key, str) or not isinstance(texts, list | tuple):
      skips.add(core.MALFORMED_ROW, where)
      continue
    for i, text in enumerate(texts):
      if isinstance(text, str | bytes):
        captions.add(key, text, f"{where}[{i}]")
      else:
        skips.add(core.MALFORMED_ROW, f"{where}[{i}]")
  images = {split: core.list_images(folder) for split, folder in folders.items()}
  return core.assemble(images, captions, skips)
