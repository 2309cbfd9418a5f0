"""A prepared folder read by TFDS's own reader (no TensorFlow), against our reader."""

import importlib.util
import json
import os
import struct
import sys

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from data_prep import prepare, tfds_export
from inpainting import input_pipeline, records

tfds = pytest.importorskip("tensorflow_datasets")


def our_examples(data_dir, split):
  """Our reader's examples of a split, in TFDS's order (shards in order, each in order)."""
  examples = []
  for path in records.shard_paths(data_dir, split):
    reader = ArrayRecordReader(path)
    examples += [records.decode(r) for r in reader.read_all()]
    reader.close()
  return examples


def assert_same(tfds_element, ours):
  assert tfds_element["id"].decode("utf-8") == ours.id
  assert tfds_element["image"].dtype == np.uint8 and tfds_element["image"].shape == (64, 64, 3)
  np.testing.assert_array_equal(tfds_element["image"], ours.image)
  assert [c.decode("utf-8") for c in tfds_element["captions"]] == ours.captions
  scene = tfds_element["scene"].decode("utf-8")
  assert (json.loads(scene) if scene else None) == ours.scene
  assert tfds_element["context_caption"].decode("utf-8") == ours.context_caption
  dialogue = tfds_element["dialogue"].decode("utf-8")
  assert (json.loads(dialogue) if dialogue else []) == ours.dialogue


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("tfds") / "synthetic")
  # 3 shards: 10 records split 4/3/3, 3 records 1/1/1.
  metadata = prepare.prepare(
    "synthetic",
    "",
    out,
    num_train=10,
    num_validation=3,
    num_shards=3,
    vocab_size=48,
    progress=False,
  )
  return out, metadata


def test_prepared_folder_opens_with_tfds_without_tensorflow(synthetic):
  assert importlib.util.find_spec("tensorflow") is None  # Else this test proves nothing.
  data_dir, metadata = synthetic
  builder = tfds.builder_from_directory(data_dir)
  assert set(builder.info.splits) == set(records.SPLITS)
  assert set(builder.info.features) == set(records.FEATURES)
  for split in records.SPLITS:
    count = metadata["counts"][split]["images"]
    assert builder.info.splits[split].num_examples == count
    assert builder.info.splits[split].num_shards == 3
    data = builder.as_data_source(split)
    ours = our_examples(data_dir, split)
    assert len(data) == len(ours) == count
    by_id = {e.id: e for e in ours}
    for i in range(len(data)):
      element = data[i]
      assert_same(element, by_id[element["id"].decode("utf-8")])
      assert element["id"].decode("utf-8") == ours[i].id  # The same index, too.
      # Synthetic: every record carries its scene, context caption and dialogue.
      assert element["scene"] and element["context_caption"]
      assert len(json.loads(element["dialogue"])) == 3
  assert "tensorflow" not in sys.modules


def test_metadata_files_name_our_shards(synthetic):
  data_dir, _ = synthetic
  with open(os.path.join(data_dir, "dataset_info.json")) as f:
    info = json.load(f)
  assert info["fileFormat"] == "array_record"
  for split in info["splits"]:
    assert split["filepathTemplate"] == records.TFDS_FILE_TEMPLATE
    paths = records.shard_paths(data_dir, split["name"])
    assert [os.path.basename(p) for p in paths] == [
      records.shard_name(split["name"], i, len(paths)) for i in range(len(paths))
    ]
    lengths = [ArrayRecordReader(p).num_records() for p in paths]
    assert [int(n) for n in split["shardLengths"]] == lengths
  assert os.path.isfile(os.path.join(data_dir, "features.json"))


def test_photos_without_scene_read_as_empty_scene(tmp_path):
  """Records with no scene (the photo sources), written directly and exported."""
  rng = np.random.default_rng(0)
  examples = [
    records.Example(f"photo-{i}", rng.integers(0, 256, (64, 64, 3), np.uint8), ["a caf\u00e9"] * i)
    for i in range(3)  # photo-0 has no captions: an empty sequence.
  ]
  writer = ArrayRecordWriter(str(tmp_path / records.shard_name("train", 0, 1)), "group_size:1")
  for example in examples:
    writer.write(records.encode(example))
  writer.close()
  tfds_export.write_metadata(str(tmp_path), {"train": [len(examples)]})
  data = tfds.builder_from_directory(str(tmp_path)).as_data_source("train")
  assert len(data) == 3
  for i, example in enumerate(examples):
    assert data[i]["scene"] == data[i]["context_caption"] == data[i]["dialogue"] == b""
    assert_same(data[i], example)
    assert_same(data[i], records.decode(records.encode(example)))


def test_decode_reads_records_written_by_tfds_and_version_1(synthetic):
  data_dir, _ = synthetic
  (ours,) = our_examples(data_dir, "validation")[:1]
  # TFDS's own serialiser: no `_header`, other field order: the protobuf path.
  element = {
    "image": ours.image,
    "captions": ours.captions,
    "id": ours.id,
    "scene": json.dumps(ours.scene),
    "context_caption": ours.context_caption,
    "dialogue": json.dumps(ours.dialogue),
  }
  serialized = tfds_export.features().serialize_example(element)
  assert b"_header" not in serialized
  decoded = records.decode(serialized)
  assert (decoded.id, decoded.captions, decoded.scene) == (ours.id, ours.captions, ours.scene)
  assert (decoded.context_caption, decoded.dialogue) == (ours.context_caption, ours.dialogue)
  np.testing.assert_array_equal(decoded.image, ours.image)
  # Format version 1.
  header = json.dumps(
    {"id": ours.id, "captions": ours.captions, "height": 64, "width": 64, "scene": ours.scene}
  ).encode()
  v1 = records.MAGIC + struct.pack("<I", len(header)) + header + ours.image.tobytes()
  decoded = records.decode(v1)
  assert (decoded.id, decoded.captions, decoded.scene) == (ours.id, ours.captions, ours.scene)
  np.testing.assert_array_equal(decoded.image, ours.image)


def test_encode_is_what_tfds_reads_and_rejects_other_sizes():
  image = np.arange(64 * 64 * 3, dtype=np.uint32).astype(np.uint8).reshape(64, 64, 3)
  example = records.Example("x", image, ["one", "two"], {"objects": [{"shape": "star"}]})
  record = records.encode(example)
  parsed = tfds_export.features().deserialize_example_np(record)
  assert_same(parsed, example)
  with pytest.raises(ValueError, match="64x64x3"):
    records.encode(records.Example("small", np.zeros((8, 8, 3), np.uint8), ["tiny"]))
  with pytest.raises(ValueError, match="not an inpainting record"):
    records.decode(b"\x0a\x02\x0a\x00")  # An Example with one empty map entry.


def test_fast_decode_equals_the_protobuf_parse(synthetic):
  data_dir, _ = synthetic
  reader = input_pipeline.RecordReader(records.shard_paths(data_dir, "validation"))
  raw = reader.read_batch(np.arange(min(len(reader), 16)))
  for record in raw:
    fast, reference = records.decode(record), records._decode_any_example(record)
    assert fast.scene_json and fast.scene_text() == fast.scene_json  # Kept as stored.
    for field in ("id", "captions", "scene", "label", "context_caption", "dialogue"):
      assert getattr(fast, field) == getattr(reference, field), field
    np.testing.assert_array_equal(fast.image, reference.image)
  # A label lives only in `_header`: such records parse it; a scene set directly wins.
  drawing = records.Example("d", np.zeros((64, 64, 3), np.uint8), ["a cat"], label="cat")
  decoded = records.decode(records.encode(drawing))
  assert (decoded.label, decoded.captions, decoded.scene, decoded.scene_text()) == (
    "cat",
    ["a cat"],
    None,
    "",
  )
  fast.scene = {"objects": []}  # Replacing a decoded scene replaces its text too.
  assert fast.scene == {"objects": []} and json.loads(fast.scene_text()) == fast.scene
