"""The on-disk record format shared by `data_prep` (writer) and the input pipeline (reader).

A prepared dataset is a folder:

    metadata.json                 source, counts per split, skips by reason, tokenizer, version
    skipped.txt                   one line per skipped input: reason<TAB>what
    tokenizer.model               SentencePiece model trained on the train split's text
                                  (captions, context captions, dialogue questions, answers)
    train.array_record-00000-of-000NN, ...
    validation.array_record-00000-of-000NN, ...
    dataset_info.json, features.json   TFDS metadata (see data_prep/tfds_export.py)

Each ArrayRecord entry is one image: a serialised `tf.train.Example` (format version 3)
whose features are all bytes lists, written by `encode` in this order:

    _header          one value: UTF-8 JSON {"id", "captions", and "scene" for synthetic
                     scenes, "label" for drawings: the class word, "context_caption" and
                     "dialogue" when the record has them}
    captions         the captions, UTF-8, one value each
    id               UTF-8
    scene            synthetic scenes: JSON, the renderer's full description (background and
                     every object's attributes, the centre object first), enough to re-render
                     the image exactly; "" otherwise
    context_caption  synthetic scenes: a caption of what the hole leaves visible (background
                     and border objects, never the centre object); "" otherwise
    dialogue         JSON list of turns {"question", "answer", "reveals"}: for synthetic
                     scenes 3 turns, `reveals` the centre object's attribute the answer names
                     ("shape", "color" or "size"); VisDial's 10 rounds with reveals ""; ""
                     (no dialogue) for other sources
    image            one value: the raw 64x64x3 uint8 pixels, row-major; always last

captions, id, scene, context_caption, dialogue and image are what TFDS writes for
`FeaturesDict(image=Tensor((64, 64, 3), uint8, encoding=BYTES), captions=Sequence(Text()),
id=Text(), scene=Text(), context_caption=Text(), dialogue=Text())`, so with the TFDS
metadata beside them the shards open with `tfds.builder_from_directory(folder)` and
`.as_data_source(split)`, no TensorFlow needed. TFDS ignores `_header`.

`_header` repeats the id, captions, scene, context caption and dialogue as one JSON object
(and holds the label, see below). `decode` no longer parses it: it walks the entries in
Python, keeps the scene's JSON text (the batch carries it as text; `Example.scene` parses it
on first access), and finds the pixels at a fixed distance from the record's end. On
format-3 synthetic records, on one 2-core machine in one sitting, that took 19-24 us per
example against 38-43 us for parsing `_header` and 48 us with protobuf's parser; the
header's JSON (1.4 KB with the scene and dialogue) was the cost. `_header` is still written,
so older readers keep working, and is parsed only when it holds a label. Pixels are stored
raw rather than as JPEG/PNG for speed: no image decoding. A record laid out otherwise (e.g.
written by TFDS's own serialiser, without `_header`) is parsed with protobuf: slower, same
result.

Older records are still read by `decode`, with an empty context caption and no dialogue:
format version 2 (the layout above without the context_caption and dialogue features, also
without them in `_header`; its folders' TFDS metadata lists the four older features), and
format version 1 (b"IPR1" | uint32 LE header length | JSON header with id, captions,
height, width, scene | raw pixels), whose folders have no TFDS metadata; prepare them again
to read them with TFDS.

`label` (optional, e.g. the class word of a QuickDraw drawing) lives only in `_header`:
records without it (every folder written before it existed, photos, scenes) read with
label None, and the TFDS features are unchanged (TFDS readers get the class word from
the captions, which name it).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import struct
from typing import Any

import numpy as np

MAGIC = b"IPR1"  # Format version 1 records start with it.
FORMAT_VERSION = 3
IMAGE_SIZE = 64
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)
SPLITS = ("train", "validation")
METADATA_FILE = "metadata.json"
TOKENIZER_FILE = "tokenizer.model"
SKIPPED_FILE = "skipped.txt"
# Feature names, as in features.json (data_prep/tfds_export.py).
FEATURES = ("image", "captions", "id", "scene", "context_caption", "dialogue")
# The features of format version 2, which every record has; the others may be absent.
REQUIRED_FEATURES = ("image", "captions", "id", "scene")
TURN_KEYS = ("question", "answer", "reveals")  # The keys of one dialogue turn.
# `shard_name` as a TFDS file name template (the `filepathTemplate` of each split).
TFDS_FILE_TEMPLATE = "{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
TFDS_FILE_FORMAT = "array_record"


@dataclasses.dataclass
class Example:
  """One decoded record.

  `decode` fills `scene_json` (the scene as stored) and leaves `scene` to be parsed from it
  on first access: the input pipeline passes the text on and never needs the dict.
  """

  id: str
  image: np.ndarray  # uint8 [64, 64, 3]
  captions: list[str]
  scene: dict[str, Any] | None = None  # synthetic scenes only
  label: str | None = None  # class word of a drawing (sketch sources); in `_header` only
  context_caption: str = ""  # what the hole leaves visible (synthetic scenes); "" = none
  # Turns {"question", "answer", "reveals"} in order (see the module docstring); [] = none.
  dialogue: list[dict[str, str]] = dataclasses.field(default_factory=list)
  scene_json: str = dataclasses.field(default="", repr=False, compare=False)

  def scene_text(self) -> str:
    """The scene as JSON ("" for none): as stored when decoded, else serialised."""
    if self.scene_json:
      return self.scene_json
    return (
      ""
      if self.scene is None
      else json.dumps(self.scene, ensure_ascii=False, separators=(",", ":"))
    )


def _get_scene(example: Example) -> dict[str, Any] | None:
  if example._scene is None and example.scene_json:
    example._scene = json.loads(example.scene_json)
  return example._scene


def _set_scene(example: Example, scene: dict[str, Any] | None) -> None:
  example._scene = scene
  example.scene_json = ""  # The stored text no longer describes it.


# After the dataclass is built, so that its __init__ assigns through the property.
Example.scene = property(_get_scene, _set_scene)  # type: ignore[assignment]


def check_dialogue(dialogue: Any) -> list[dict[str, str]]:
  """The turns as plain dicts of TURN_KEYS -> str; raises ValueError for anything else."""
  if not isinstance(dialogue, list | tuple):
    raise ValueError(f"a dialogue is a list of turns, got {type(dialogue).__name__}")
  turns = []
  for turn in dialogue:
    if not isinstance(turn, dict) or sorted(turn) != sorted(TURN_KEYS):
      raise ValueError(f"a dialogue turn has exactly the keys {TURN_KEYS}, got {turn!r}")
    if not all(isinstance(turn[key], str) for key in TURN_KEYS):
      raise ValueError(f"a dialogue turn's values are strings, got {turn!r}")
    turns.append({key: turn[key] for key in TURN_KEYS})
  return turns


# --- protobuf wire format (only what a bytes-only tf.train.Example needs) -------------------

_LEN = 0x0A  # Field 1, length-delimited: Example.features, Features.feature (a map entry),
# a map entry's key, Feature.bytes_list, BytesList.value.
_VALUE = 0x12  # Field 2, length-delimited: a map entry's value (a Feature).
_HEADER = b"_header"
_IMAGE_BYTES = IMAGE_SIZE * IMAGE_SIZE * 3


def _varint(value: int) -> bytes:
  out = bytearray()
  while value >= 0x80:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _field(payload: bytes, tag: int = _LEN) -> bytes:
  return bytes([tag]) + _varint(len(payload)) + payload


def _entry(key: bytes, values: list[bytes]) -> bytes:
  """A `Features.feature` map entry: key -> Feature(bytes_list=BytesList(value=values))."""
  bytes_list = b"".join(_field(value) for value in values)
  return _field(_field(key) + _field(_field(bytes_list), _VALUE))


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  """(value, position after it) of the varint at `pos`."""
  byte = buf[pos]
  if byte < 0x80:
    return byte, pos + 1
  result, shift = byte & 0x7F, 7
  while True:
    pos += 1
    byte = buf[pos]
    result |= (byte & 0x7F) << shift
    if byte < 0x80:
      return result, pos + 1
    shift += 7


# The image entry but its pixels: constant, since the pixel count is.
_IMAGE_PREFIX = _entry(b"image", [bytes(_IMAGE_BYTES)])[:-_IMAGE_BYTES]


# --- writing ---------------------------------------------------------------------------------


def encode(example: Example) -> bytes:
  """Serialises an example as a `tf.train.Example` (see the module docstring)."""
  image = np.ascontiguousarray(example.image, dtype=np.uint8)
  if image.shape != IMAGE_SHAPE:
    raise ValueError(f"image must be {IMAGE_SIZE}x{IMAGE_SIZE}x3 uint8, got {image.shape}")
  captions = list(example.captions)
  header: dict[str, Any] = {"id": example.id, "captions": captions}
  scene = ""
  if example.scene is not None:
    header["scene"] = example.scene
    scene = json.dumps(example.scene, ensure_ascii=False, separators=(",", ":"))
  if example.label is not None:
    header["label"] = example.label
  if example.context_caption:
    header["context_caption"] = example.context_caption
  dialogue = ""
  if example.dialogue:
    header["dialogue"] = check_dialogue(example.dialogue)
    dialogue = json.dumps(header["dialogue"], ensure_ascii=False, separators=(",", ":"))
  header_json = json.dumps(header, ensure_ascii=False, separators=(",", ":"))
  return _field(
    _entry(_HEADER, [header_json.encode("utf-8")])
    + _entry(b"captions", [caption.encode("utf-8") for caption in captions])
    + _entry(b"id", [example.id.encode("utf-8")])
    + _entry(b"scene", [scene.encode("utf-8")])
    + _entry(b"context_caption", [example.context_caption.encode("utf-8")])
    + _entry(b"dialogue", [dialogue.encode("utf-8")])
    + _entry(b"image", [image.tobytes()])
  )


# --- reading ---------------------------------------------------------------------------------


class _OtherLayout(Exception):
  """The record is not laid out as `encode` writes it."""


def _length_at(buf: bytes, pos: int, tag: int) -> tuple[int, int]:
  """(length, payload start) of the length-delimited field with `tag` at `pos`."""
  if buf[pos] != tag:
    raise _OtherLayout
  # Lengths of one byte (< 128) or two (< 16 KB, the pixels' entry included) are read
  # inline; `_read_varint` takes the rest.
  length = buf[pos + 1]
  if length < 0x80:
    return length, pos + 2
  high = buf[pos + 2]
  if high < 0x80:
    return (length & 0x7F) | (high << 7), pos + 3
  return _read_varint(buf, pos + 1)


def _entries(buf: bytes, pos: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
  """{key: [(start, end) of each value]} of the bytes-list map entries in buf[pos:end].

  An entry is (key, Feature(BytesList(values))). `_header` maps to [] unless it holds a
  label, the one thing the other entries lack: its JSON is not parsed otherwise.
  """
  out = {}
  while pos < end:
    length, pos = _length_at(buf, pos, _LEN)  # the entry
    entry_end = pos + length
    length, pos = _length_at(buf, pos, _LEN)  # its key
    key = buf[pos : pos + length]
    pos += length
    if key == _HEADER and b'"label":' not in buf[pos:entry_end]:
      out[key], pos = [], entry_end
      continue
    _, pos = _length_at(buf, pos, _VALUE)  # the Feature
    length, pos = _length_at(buf, pos, _LEN)  # its BytesList
    if pos + length != entry_end:
      raise _OtherLayout
    values = []
    while pos < entry_end:
      length, pos = _length_at(buf, pos, _LEN)
      values.append((pos, pos + length))
      pos += length
    if pos != entry_end:
      raise _OtherLayout
    out[key] = values
  return out


def _decode_ours(buf: bytes) -> Example:
  """Reads the entries `encode` writes, skipping `_header` unless it holds a label (the
  one thing only it has); the pixels are found at their fixed distance from the end."""
  if buf[0] != _LEN:
    raise _OtherLayout
  length, pos = _read_varint(buf, 1)  # Example.features
  image_start = len(buf) - _IMAGE_BYTES
  if pos + length != len(buf) or buf[image_start - len(_IMAGE_PREFIX) : image_start] != (
    _IMAGE_PREFIX
  ):
    raise _OtherLayout
  entries = _entries(buf, pos, image_start - len(_IMAGE_PREFIX))
  header = entries.pop(_HEADER)  # [] when skipped: it holds no label.
  label = json.loads(buf[header[0][0] : header[0][1]]).get("label") if header else None
  text = {key: [buf[a:b].decode("utf-8") for a, b in values] for key, values in entries.items()}
  (image_id,), (scene,) = text[b"id"], text[b"scene"]
  (context_caption,), (dialogue,) = text.get(b"context_caption", [""]), text.get(b"dialogue", [""])
  image = np.frombuffer(buf, dtype=np.uint8, count=_IMAGE_BYTES, offset=image_start)
  return Example(
    id=image_id,
    image=image.reshape(IMAGE_SHAPE),
    captions=text[b"captions"],
    label=label,
    context_caption=context_caption,
    dialogue=json.loads(dialogue) if dialogue else [],
    scene_json=scene,
  )


def _decode_any_example(record: bytes) -> Example:
  """Any serialised Example with our features, via protobuf (TFDS's copy of the proto)."""
  from google.protobuf.message import DecodeError  # noqa: PLC0415  (rarely needed)
  from tensorflow_datasets.proto import tf_example_pb2  # noqa: PLC0415

  try:
    features = tf_example_pb2.Example.FromString(record).features.feature
  except DecodeError as error:
    raise ValueError(f"not an inpainting record ({error})") from error
  values = {}
  for key in FEATURES:
    if key not in features and key not in REQUIRED_FEATURES:
      values[key] = [b""]  # A format version 2 record: no context caption, no dialogue.
      continue
    if key not in features or features[key].WhichOneof("kind") != "bytes_list":
      raise ValueError(f"not an inpainting record: no bytes feature {key!r}")
    values[key] = list(features[key].bytes_list.value)
    if key != "captions" and len(values[key]) != 1:
      raise ValueError(f"not an inpainting record: {len(values[key])} values in {key!r}")
  (image,), (image_id,), (scene,) = values["image"], values["id"], values["scene"]
  (context_caption,), (dialogue,) = values["context_caption"], values["dialogue"]
  if len(image) != _IMAGE_BYTES:
    raise ValueError(f"not an inpainting record: {len(image)} image bytes, not {_IMAGE_BYTES}")
  return Example(
    id=image_id.decode("utf-8"),
    image=np.frombuffer(image, dtype=np.uint8).reshape(IMAGE_SHAPE),
    captions=[caption.decode("utf-8") for caption in values["captions"]],
    scene=json.loads(scene) if scene else None,
    context_caption=context_caption.decode("utf-8"),
    dialogue=check_dialogue(json.loads(dialogue)) if dialogue else [],
  )


def _decode_v1(record: bytes) -> Example:
  (header_len,) = struct.unpack_from("<I", record, 4)
  header = json.loads(record[8 : 8 + header_len])
  height, width = header["height"], header["width"]
  image = np.frombuffer(record, dtype=np.uint8, offset=8 + header_len, count=height * width * 3)
  return Example(
    id=header["id"],
    image=image.reshape(height, width, 3),
    captions=header["captions"],
    scene=header.get("scene"),
    label=header.get("label"),
    context_caption=header.get("context_caption", ""),
    dialogue=header.get("dialogue", []),
  )


def decode(record: bytes) -> Example:
  """Parses a record: written by `encode` (this format version or version 2), by format
  version 1's encoder, or any `tf.train.Example` with our features (e.g. written by TFDS;
  the version 2 features suffice).

  Raises:
    ValueError: the bytes are not an inpainting record.
  """
  if record[:4] == MAGIC:
    return _decode_v1(record)
  try:
    return _decode_ours(record)
  except (_OtherLayout, IndexError, ValueError, KeyError, TypeError):
    return _decode_any_example(record)


# --- the folder ------------------------------------------------------------------------------


def shard_paths(data_dir: str, split: str) -> list[str]:
  """Returns the sorted ArrayRecord shard paths of one split."""
  return sorted(glob.glob(os.path.join(data_dir, f"{split}.array_record-*")))


def shard_name(split: str, index: int, count: int) -> str:
  """`TFDS_FILE_TEMPLATE` filled in as TFDS fills it: both numbers as wide as the count, 5
  digits at least (so the names also sort in shard order)."""
  width = max(5, len(str(count)))
  return f"{split}.{TFDS_FILE_FORMAT}-{index:0{width}d}-of-{count:0{width}d}"


def read_metadata(data_dir: str) -> dict[str, Any]:
  """Reads metadata.json; raises FileNotFoundError with a clear message if absent."""
  path = os.path.join(data_dir, METADATA_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{data_dir} is not a prepared dataset (no {METADATA_FILE})")
  with open(path, encoding="utf-8") as f:
    return json.load(f)
