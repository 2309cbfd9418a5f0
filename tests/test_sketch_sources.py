"""The quickdraw and sketchrnn sources on fixtures full of bad lines, and the record label."""

import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from data_prep import core
from data_prep.prepare import PrepareError, prepare
from data_prep.sources import sketchrnn
from inpainting import records, strokes

EIFFEL = "The Eiffel Tower"  # A class whose file name holds spaces.


def read_split(folder, split):
  out = []
  for path in records.shard_paths(folder, split):
    reader = ArrayRecordReader(path)
    out.extend(records.decode(r) for r in reader.read_all())
    reader.close()
  return out


def drawing(rng):
  """A random valid QuickDraw drawing: 1-3 strokes in the 0..255 box."""
  out = []
  for _ in range(rng.integers(1, 4)):
    n = int(rng.integers(2, 8))
    out.append([rng.integers(0, 256, n).tolist(), rng.integers(0, 256, n).tolist()])
  return out


def line(word, key, strokes_):
  return json.dumps(
    {"word": word, "countrycode": "FR", "recognized": True, "key_id": key, "drawing": strokes_}
  )


# Bad lines added to cat.ndjson, by the reason they must be counted under.
BAD_LINES = {
  core.MALFORMED_ROW: [
    "{not json",
    "[1, 2, 3]",
    json.dumps({"word": "cat", "key_id": "m1"}),  # no drawing
    line("dog", "m2", [[[1, 2], [1, 2]]]),  # another class's word in cat's file
    line("cat", "m3", [[["a"], [1]]]),  # a coordinate that is not a number
    line("cat", "m4", [[[1, 2], [1]]]),  # x and y of different lengths
  ],
  core.EMPTY_DRAWING: [line("cat", "e1", []), line("cat", "e2", [[[], []]])],
  core.OUT_OF_RANGE: [line("cat", "o1", [[[0, 300], [5, 5]]]), line("cat", "o2", [[[-2], [5]]])],
  core.DUPLICATE_ID: [line("cat", "cat-0", [[[1, 2], [3, 4]]])],  # key of the first cat
}


def make_quickdraw(root, per_class=10):
  """cat (with every kind of bad line), The Eiffel Tower and dog (not requested)."""
  rng = np.random.default_rng(0)
  os.makedirs(root, exist_ok=True)
  good = {}
  for word in ("cat", EIFFEL, "dog"):
    good[word] = {f"{word}-{i}": drawing(rng) for i in range(per_class)}
    lines = [line(word, key, d) for key, d in good[word].items()]
    if word == "cat":
      lines += [bad for bads in BAD_LINES.values() for bad in bads] + [""]
    with open(os.path.join(root, f"{word}.ndjson"), "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
  with open(os.path.join(root, "cat.ndjson"), "ab") as f:
    f.write(b'{"word": "cat", "key_id": "u1", "drawing": [], "x": "caf\xe9"}\n')  # not UTF-8
  return good


def test_quickdraw_keeps_the_asked_classes_and_counts_every_skip(tmp_path):
  good = make_quickdraw(str(tmp_path / "in"))
  out = str(tmp_path / "out")
  metadata = prepare(
    "quickdraw", str(tmp_path / "in"), out, classes=f"cat,{EIFFEL}", progress=False
  )
  expected = {reason: len(lines) for reason, lines in BAD_LINES.items()}
  expected[core.INVALID_UTF8] = 1
  assert {k: v for k, v in metadata["skipped"].items() if v} == expected
  with open(os.path.join(out, records.SKIPPED_FILE), encoding="utf-8") as f:
    assert len(f.read().splitlines()) == metadata["num_skipped"] == sum(expected.values())

  train, validation = read_split(out, "train"), read_split(out, "validation")
  assert metadata["counts"]["train"]["images"] == len(train) == 16
  assert metadata["counts"]["validation"]["images"] == len(validation) == 4
  for split in (train, validation):  # Every class in both splits, in proportion.
    assert sorted(e.label for e in split).count("cat") == len(split) // 2
  assert {e.label for e in train} == {"cat", EIFFEL}  # dog was not asked for.
  eiffel = next(e for e in train if e.label == EIFFEL)
  assert eiffel.id.startswith(f"{EIFFEL}/") and eiffel.captions == strokes.captions(EIFFEL)
  assert eiffel.captions[0] == "a drawing of The Eiffel Tower"
  # The pixels are the rasteriser's rendering of that line's strokes.
  key = eiffel.id.split("/", 1)[1]
  expected_pixels = strokes.render(strokes.from_quickdraw(good[EIFFEL][key]))
  np.testing.assert_array_equal(eiffel.image, expected_pixels)
  assert metadata["drawings"]["classes"] == ["cat", EIFFEL]


def test_quickdraw_split_is_seeded_and_augmentation_adds_train_copies(tmp_path):
  make_quickdraw(str(tmp_path / "in"))
  ids = {}
  for name, options in {
    "a": {"seed": 0},
    "b": {"seed": 0},
    "c": {"seed": 1},
    "aug": {"seed": 0, "augment": 2},
  }.items():
    prepare("quickdraw", str(tmp_path / "in"), str(tmp_path / name), progress=False, **options)
    ids[name] = {
      s: sorted(e.id for e in read_split(str(tmp_path / name), s)) for s in records.SPLITS
    }
  assert ids["a"] == ids["b"] and ids["a"]["validation"] != ids["c"]["validation"]
  assert len(ids["a"]["validation"]) == 6  # 2 of 10 for each of the 3 classes (all kept).
  assert ids["aug"]["validation"] == ids["a"]["validation"]
  originals = ids["a"]["train"]
  assert ids["aug"]["train"] == sorted(
    originals + [f"{i}#aug{k}" for i in originals for k in (1, 2)]
  )
  by_id = {e.id: e for e in read_split(str(tmp_path / "aug"), "train")}
  first = originals[0]
  assert by_id[f"{first}#aug1"].label == by_id[first].label
  assert (by_id[f"{first}#aug1"].image != by_id[first].image).any()
  assert (by_id[f"{first}#aug1"].image != by_id[f"{first}#aug2"].image).any()


def test_quickdraw_unknown_class_and_cli_with_spaces(tmp_path, repo_root):
  make_quickdraw(str(tmp_path / "in"))
  with pytest.raises(PrepareError, match="no 'cta.ndjson'"):
    prepare("quickdraw", str(tmp_path / "in"), str(tmp_path / "x"), classes="cta")
  command = [
    sys.executable,
    "-m",
    "data_prep.prepare",
    "--source=quickdraw",
    f"--input={tmp_path / 'in'}",
    f"--output_dir={tmp_path / 'cli'}",
    f"--classes={EIFFEL},dog",
    "--line_width=2",
  ]
  done = subprocess.run(command, cwd=repo_root, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  summary = json.loads(done.stdout.strip().splitlines()[-1])
  assert summary["counts"]["train"]["images"] == 16 and summary["skipped"] == {}
  with open(tmp_path / "cli" / "metadata.json", encoding="utf-8") as f:
    assert json.load(f)["drawings"]["line_width"] == 2.0


# --- sketchrnn ----------------------------------------------------------------------------------


def sequence(rng, n):
  seq = np.zeros((n, 3), np.int16)
  seq[:, :2] = rng.integers(-20, 21, (n, 2))
  seq[rng.integers(0, n, 2), 2] = 1
  seq[-1, 2] = 1
  return seq


def object_array(items):
  array = np.empty(len(items), dtype=object)
  for i, item in enumerate(items):
    array[i] = item
  return array


def make_npz(path):
  """8 good train sequences + one of each bad kind, 3 valid, 2 test."""
  rng = np.random.default_rng(1)
  bad = {
    core.MALFORMED_ROW: [np.zeros((4, 2), np.int16), np.array([[1, 1, 2]], np.int16)],
    core.EMPTY_DRAWING: [np.zeros((0, 3), np.int16)],
    core.OUT_OF_RANGE: [np.array([[5000, 0, 1]], np.int16)],
  }
  train = [sequence(rng, n) for n in range(5, 13)] + [b for bs in bad.values() for b in bs]
  np.savez(
    path,
    train=object_array(train),
    valid=object_array([sequence(rng, 6) for _ in range(3)]),
    test=object_array([sequence(rng, 6) for _ in range(2)]),
  )
  return {reason: len(v) for reason, v in bad.items()}


def test_sketchrnn_keeps_the_npz_split_and_counts_every_skip(tmp_path):
  path = str(tmp_path / "my_sheep.npz")
  expected = make_npz(path)
  out = str(tmp_path / "out")
  metadata = prepare("sketchrnn", path, out, progress=False, augment=1)
  assert {k: v for k, v in metadata["skipped"].items() if v} == expected
  assert metadata["counts"]["train"]["images"] == 16  # 8 good + 8 augmented copies
  assert metadata["counts"]["validation"]["images"] == 3  # valid; test is not converted
  assert metadata["drawings"]["not_converted"] == ["test"]
  train = read_split(out, "train")
  assert {e.label for e in train} == {"sheep"}
  assert train[0].captions[0] == "a drawing of a sheep"
  loaded = np.load(path, allow_pickle=True, encoding="latin1")
  np.testing.assert_array_equal(
    train[0].image, strokes.render(strokes.from_stroke3(loaded["train"][0]))
  )
  # The restricted reader gives exactly np.load's arrays.
  mine = sketchrnn.load_npz(path, ("train", "valid", "test"))
  for member in mine:
    assert len(mine[member]) == len(loaded[member])
    for a, b in zip(mine[member], loaded[member]):
      assert a.dtype == b.dtype and np.array_equal(a, b)
  # --classes names the word; a folder is not a file.
  metadata = prepare("sketchrnn", path, str(tmp_path / "o2"), classes="ram", progress=False)
  assert {e.label for e in read_split(str(tmp_path / "o2"), "validation")} == {"ram"}
  with pytest.raises(PrepareError, match="file not found"):
    prepare("sketchrnn", str(tmp_path), str(tmp_path / "o3"))


class Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_sketchrnn_refuses_a_pickle_that_would_run_code(tmp_path):
  marker = tmp_path / "pwned"
  path = str(tmp_path / "evil.npz")
  header = {"descr": "|O", "fortran_order": False, "shape": (1,)}
  with zipfile.ZipFile(path, "w") as archive:
    for member in ("train", "valid"):
      with archive.open(f"{member}.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(pickle.dumps(Exploit(marker), protocol=2))
  with pytest.raises(PrepareError, match="refusing .*posix.system|refusing .*os.system"):
    prepare("sketchrnn", path, str(tmp_path / "out"))
  assert not marker.exists()


# --- the record label -------------------------------------------------------------------------------


def test_the_label_round_trips_and_records_without_it_read_as_before():
  image = np.zeros((64, 64, 3), np.uint8)
  labelled = records.encode(records.Example("a", image, ["x"], label="The Eiffel Tower"))
  plain = records.encode(records.Example("a", image, ["x"]))
  assert records.decode(labelled).label == "The Eiffel Tower"
  assert records.decode(plain).label is None and b"label" not in plain
  assert len(labelled) > len(plain)
  # A record laid out otherwise (the protobuf path, as TFDS writes) has no label.
  from tensorflow_datasets.proto import tf_example_pb2

  example = tf_example_pb2.Example()
  for key, values in {
    "image": [image.tobytes()],
    "captions": [b"x"],
    "id": [b"a"],
    "scene": [b""],
  }.items():
    example.features.feature[key].bytes_list.value.extend(values)
  decoded = records.decode(example.SerializeToString())
  assert decoded.id == "a" and decoded.label is None
