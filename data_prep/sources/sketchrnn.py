"""sketch-rnn datasets: one `.npz` with `train`, `valid` and `test` object arrays of stroke-3
sequences (dx, dy, pen_lifted), e.g. `aaron_sheep.npz`. `--input` is the file itself.

The arrays are pickled object arrays, which `np.load(path, allow_pickle=True,
encoding="latin1")` would unpickle with the full pickle machinery: a crafted file could run
code. So only the file the user points at is opened, and its members are read by a
restricted unpickler that can build numpy arrays and dtypes and nothing else (the same
arrays np.load gives; tests/test_sketch_sources.py checks both); a file that references
anything else is refused with a one-line error.

The npz's own split is kept: `train` -> train, `valid` -> validation; `test` is not
converted (metadata.json counts it). The class word is `--classes` when it names one word,
else the file name after its last underscore ("aaron_sheep.npz" -> "sheep"). Drawings are
rasterised and captioned as in the quickdraw source, with the same `--line_width` and
`--augment`. Skipped, counted: entries that are not numeric [n, 3] arrays or whose pen
state is not 0/1 (malformed_row), sequences without points (empty_drawing), offsets over
1000 (sketch-rnn's own limit) or not finite (out_of_range).
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import zipfile
from typing import Any

import numpy as np

from data_prep import core
from data_prep.sources import quickdraw
from inpainting import strokes

INPUT_IS_FILE = True
PREPROCESSING = quickdraw.PREPROCESSING
SPLITS = {"train": "train", "valid": "validation"}  # npz member -> our split
UNUSED_SPLITS = ("test",)
_STROKE_SKIPS = {
  strokes.MALFORMED: core.MALFORMED_ROW,
  strokes.EMPTY: core.EMPTY_DRAWING,
  strokes.OUT_OF_RANGE: core.OUT_OF_RANGE,
}
# What a pickled numpy array needs: numpy's array reconstructor, ndarray and dtype.
_ALLOWED = {
  ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
  ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
  ("numpy", "ndarray"): np.ndarray,
  ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
  """Builds numpy arrays and dtypes (and pickle's own plain values), nothing else."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    raise pickle.UnpicklingError(f"it references {module}.{name}")

  def persistent_load(self, pid: Any) -> Any:
    raise pickle.UnpicklingError("it uses persistent ids")


def _read_member(archive: zipfile.ZipFile, name: str) -> np.ndarray:
  f = io.BytesIO(archive.read(name))
  version = np.lib.format.read_magic(f)
  if version == (1, 0):
    _, _, dtype = np.lib.format.read_array_header_1_0(f)
  elif version == (2, 0):
    _, _, dtype = np.lib.format.read_array_header_2_0(f)
  else:
    raise ValueError(f"{name}: .npy format version {version} not supported")
  if not dtype.hasobject:  # Plain numbers: numpy's own reader, which never unpickles.
    f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False)
  array = _ArrayUnpickler(f, encoding="latin1").load()
  if not isinstance(array, np.ndarray):
    raise pickle.UnpicklingError(f"{name} holds a {type(array).__name__}")
  return array


def load_npz(path: str, members: tuple[str, ...]) -> dict[str, np.ndarray]:
  """The arrays `members` of an .npz (those present), read without general unpickling.

  Raises:
    core.PrepareError: not a zip of .npy files, or a pickle that references anything but
      numpy arrays.
  """
  try:
    with zipfile.ZipFile(path) as archive:
      names = set(archive.namelist())
      return {m: _read_member(archive, f"{m}.npy") for m in members if f"{m}.npy" in names}
  except pickle.UnpicklingError as error:
    raise core.PrepareError(f"refusing {path}: not a plain array file ({error})") from None
  except Exception as error:  # Not a zip, truncated, bad .npy header.
    raise core.PrepareError(f"cannot read {path}: {type(error).__name__}: {error}") from None


def class_word(path: str, options: core.Options) -> str:
  words = quickdraw.wanted_classes(options)
  if len(words) > 1:
    raise core.PrepareError(f"a sketch-rnn file holds one class; --classes names {len(words)}")
  if words:
    return words[0]
  stem = os.path.splitext(os.path.basename(path))[0]
  return " ".join(stem.rsplit("_", 1)[-1].split()) or stem


def collect(
  input_path: str, options: core.Options, skips: core.Skips
) -> dict[str, list[core.Item]]:
  arrays = load_npz(input_path, tuple(SPLITS) + UNUSED_SPLITS)
  missing = [m for m in SPLITS if m not in arrays]
  if missing:
    raise core.PrepareError(f"{input_path} has no {', '.join(missing)} array")
  word = class_word(input_path, options)
  captions = tuple(strokes.captions(word))
  items: dict[str, list[core.Item]] = {"train": [], "validation": []}
  for member, split in SPLITS.items():
    if arrays[member].ndim == 0:
      raise core.PrepareError(f"{input_path}: {member} is not an array of sequences")
    for i, sequence in enumerate(arrays[member]):
      record_id = f"{member}-{i:05d}"
      try:
        drawing = strokes.from_stroke3(sequence)
      except strokes.StrokeError as error:
        skips.add(_STROKE_SKIPS[error.reason], f"{member}[{i}] ({error})")
        continue
      render = functools.partial(strokes.render, drawing, options.line_width)
      items[split].append(core.Item(record_id, captions, render=render, label=word))
      if split == "train":
        for k in range(1, options.augment + 1):
          seed = quickdraw.augment_seed(options.seed, record_id, k)
          render = functools.partial(strokes.render, drawing, options.line_width, seed)
          items[split].append(core.Item(f"{record_id}#aug{k}", captions, render=render, label=word))
  return items


def extra_metadata(options: core.Options) -> dict[str, Any]:
  return {
    "drawings": {
      "line_width": options.line_width,
      "augment": options.augment,
      "npz_splits": {member: split for member, split in SPLITS.items()},
      "not_converted": list(UNUSED_SPLITS),
      "caption_templates": list(strokes.CAPTION_TEMPLATES),
    }
  }
