"""The on-disk record format shared by `data_prep` (writer) and the input pipeline (reader).

A prepared dataset is a folder:

    metadata.json                 source, counts per split, skips by reason, tokenizer, version
    skipped.txt                   one line per skipped input: reason<TAB>what
    tokenizer.model               SentencePiece model trained on the train split's captions
    train.array_record-00000-of-000NN, ...
    validation.array_record-00000-of-000NN, ...

Each ArrayRecord entry is one image:

    b"IPR1" | uint32 little-endian header length | UTF-8 JSON header | raw uint8 pixels

The JSON header holds `id` (str), `captions` (list of str), `height`, `width`, and for
synthetic scenes `scene`: the renderer's full description (background and every object's
attributes, the centre object first), enough to re-render the image exactly. Raw pixels
(HxWx3, row-major) are kept instead of JPEG: decoding is a `np.frombuffer`, which is what
makes the pipeline fast (see benchmarks/input_pipeline.py).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import struct
from typing import Any

import numpy as np

MAGIC = b"IPR1"
FORMAT_VERSION = 1
IMAGE_SIZE = 64
SPLITS = ("train", "validation")
METADATA_FILE = "metadata.json"
TOKENIZER_FILE = "tokenizer.model"
SKIPPED_FILE = "skipped.txt"


@dataclasses.dataclass
class Example:
  """One decoded record."""

  id: str
  image: np.ndarray  # uint8 [H, W, 3]
  captions: list[str]
  scene: dict[str, Any] | None = None  # synthetic scenes only


def encode(example: Example) -> bytes:
  """Serialises an example to bytes."""
  image = np.ascontiguousarray(example.image, dtype=np.uint8)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image must be HxWx3 uint8, got {image.shape}")
  header = {
    "id": example.id,
    "captions": list(example.captions),
    "height": int(image.shape[0]),
    "width": int(image.shape[1]),
  }
  if example.scene is not None:
    header["scene"] = example.scene
  header_bytes = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
  return MAGIC + struct.pack("<I", len(header_bytes)) + header_bytes + image.tobytes()


def decode(record: bytes) -> Example:
  """Parses bytes written by `encode`."""
  if record[:4] != MAGIC:
    raise ValueError("not an inpainting record (bad magic)")
  (header_len,) = struct.unpack_from("<I", record, 4)
  header = json.loads(record[8 : 8 + header_len])
  height, width = header["height"], header["width"]
  image = np.frombuffer(record, dtype=np.uint8, offset=8 + header_len, count=height * width * 3)
  return Example(
    id=header["id"],
    image=image.reshape(height, width, 3),
    captions=header["captions"],
    scene=header.get("scene"),
  )


def shard_paths(data_dir: str, split: str) -> list[str]:
  """Returns the sorted ArrayRecord shard paths of one split."""
  return sorted(glob.glob(os.path.join(data_dir, f"{split}.array_record-*")))


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}.array_record-{index:05d}-of-{count:05d}"


def read_metadata(data_dir: str) -> dict[str, Any]:
  """Reads metadata.json; raises FileNotFoundError with a clear message if absent."""
  path = os.path.join(data_dir, METADATA_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{data_dir} is not a prepared dataset (no {METADATA_FILE})")
  with open(path, encoding="utf-8") as f:
    return json.load(f)
