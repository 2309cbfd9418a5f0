"""data_prep: every source on a tiny fixture full of bad inputs, the CLI's errors, safety."""

import csv
import io
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader
from PIL import Image, JpegImagePlugin

from data_prep import prepare
from data_prep.sources import flickr
from inpainting import records, scenes

BAD_UTF8 = b"a caf\xe9 with \xff bytes"  # Latin-1, not UTF-8.


# --- fixture builders --------------------------------------------------------------------------


def write_image(path, size=(64, 64), mode="RGB", seed=0, truncate=False):
  """A smooth colourful (or grey) JPEG/PNG; `truncate` cuts the file in half."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
  image = Image.fromarray(coarse).resize(size, Image.Resampling.BILINEAR).convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG" if str(path).endswith(".png") else "JPEG", quality=90)
  data = buffer.getvalue()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2] if truncate else data)


def captions_for(name, count=2):
  return [f"photo {name} number {i}, with a comma" for i in range(count)]


class Exploit:
  """Unpickling this would run a shell command that creates `marker`."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def make_course(root, pickle_payload=None):
  """Course layout with one of each problem. Returns the expected kept ids per split."""
  train, val = os.path.join(root, "train2014"), os.path.join(root, "val2014")
  for i, name in enumerate(["good1", "good2", "dup", "gray", "trunc", "nocap"]):
    write_image(
      os.path.join(train, f"{name}.jpg"),
      mode="L" if name == "gray" else "RGB",
      seed=i,
      truncate=name == "trunc",
    )
  for i, name in enumerate(["val1", "val2", "dup"]):
    write_image(os.path.join(val, f"{name}.jpg"), seed=10 + i)
  table = {
    name: captions_for(name)
    for name in ["good1", "dup", "gray", "trunc", "val1", "val2", "missing"]
  }
  table["good2"] = [*captions_for("good2"), BAD_UTF8]  # Bytes: decoded strictly.
  with open(os.path.join(root, "dict_key_imgID_value_caps_train_and_valid.pkl"), "wb") as f:
    pickle.dump(table if pickle_payload is None else pickle_payload, f)
  with open(os.path.join(root, "worddict.pkl"), "wb") as f:
    pickle.dump(Exploit(os.path.join(root, "never")), f)  # Must not even be opened.
  return {"train": {"good1", "good2", "dup"}, "validation": {"val1", "val2"}}


def make_coco(root):
  os.makedirs(os.path.join(root, "annotations"))
  expected = {}
  for split, folder, names in [
    ("train", "train2014", ["t1", "t2", "gray", "trunc", "nocap", "gone"]),
    ("validation", "val2014", ["v1", "v2"]),
  ]:
    images, annotations = [], []
    for i, name in enumerate(names):
      if name != "gone":  # Listed in the JSON, no file.
        write_image(
          os.path.join(root, folder, f"{name}.jpg"),
          size=(96, 72),
          mode="L" if name == "gray" else "RGB",
          seed=20 + i,
          truncate=name == "trunc",
        )
      images.append({"id": 100 + i, "file_name": f"{name}.jpg"})
      if name != "nocap":
        annotations += [{"image_id": 100 + i, "caption": c} for c in captions_for(name)]
    if split == "train":
      images.append({"id": 100, "file_name": "t1.jpg"})  # Duplicate id.
      annotations.append({"image_id": 999, "caption": "a caption for no image"})
      annotations.append({"image_id": 101, "caption": "PLACEHOLDER"})
    text = json.dumps({"images": images, "annotations": annotations}).encode()
    with open(os.path.join(root, "annotations", f"captions_{folder}.json"), "wb") as f:
      f.write(text.replace(b"PLACEHOLDER", BAD_UTF8))
    expected[split] = {n for n in names if n not in ("gray", "trunc", "nocap", "gone")}
  return expected


def make_flickr(root, num_good=18):
  images = os.path.join(root, "images")
  names = [f"img{i:02d}.jpg" for i in range(num_good)] + [
    "gray.jpg",
    "trunc.jpg",
    "nocap.jpg",
    "img00.png",
  ]
  for i, name in enumerate(names):
    write_image(
      os.path.join(images, name),
      size=(80, 60),
      mode="L" if name == "gray.jpg" else "RGB",
      seed=40 + i,
      truncate=name == "trunc.jpg",
    )
  rows = io.StringIO()
  writer = csv.writer(rows)
  writer.writerow(["image", "caption"])
  for name in names:
    if name not in ("nocap.jpg", "img00.png"):
      writer.writerows([name, c] for c in captions_for(name, 3))
  writer.writerow(["img01.jpg", 'a dog, "quoted", running'])
  writer.writerow(["missing.jpg", "a caption for no image"])
  data = rows.getvalue().encode() + b"img02.jpg," + BAD_UTF8 + b"\n"
  with open(os.path.join(root, "captions.txt"), "wb") as f:
    f.write(data)
  return num_good  # Kept images (img00.png duplicates img00.jpg's id).


# --- helpers -------------------------------------------------------------------------------------


def read_split(data_dir, split):
  examples = []
  for path in records.shard_paths(data_dir, split):
    reader = ArrayRecordReader(path)
    examples += [records.decode(r) for r in reader.read_all()]
    reader.close()
  return examples


def skipped_lines(data_dir):
  with open(os.path.join(data_dir, records.SKIPPED_FILE), encoding="utf-8") as f:
    return [line.rstrip("\n").split("\t") for line in f]


def check_dataset(data_dir, metadata):
  """Counts in metadata match the shards; every record decodes; the tokenizer exists."""
  assert metadata == records.read_metadata(data_dir)
  for split in records.SPLITS:
    examples = read_split(data_dir, split)
    assert metadata["counts"][split]["images"] == len(examples)
    assert metadata["counts"][split]["captions"] == sum(len(e.captions) for e in examples)
    for example in examples:
      assert example.image.shape == (64, 64, 3) and example.captions
  assert os.path.isfile(os.path.join(data_dir, records.TOKENIZER_FILE))
  assert (
    sum(metadata["skipped"].values()) == metadata["num_skipped"] == len(skipped_lines(data_dir))
  )
  assert not [p for p in os.listdir(os.path.dirname(data_dir)) if ".partial-" in p]


def run_cli(*args):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run(
    [sys.executable, "-m", "data_prep.prepare", *args],
    cwd=repo,
    capture_output=True,
    text=True,
    timeout=120,
  )


def assert_one_line_error(result, *fragments):
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert "Traceback" not in result.stderr
  for fragment in fragments:
    assert fragment in lines[0]


# --- sources ---------------------------------------------------------------------------------


def test_ift6266_skips_each_bad_input(tmp_path):
  expected = make_course(tmp_path / "course")
  out = str(tmp_path / "out")
  metadata = prepare.prepare(
    "ift6266", str(tmp_path / "course"), out, vocab_size=64, progress=False
  )
  check_dataset(out, metadata)
  for split in records.SPLITS:
    assert {e.id for e in read_split(out, split)} == expected[split]
  skipped = metadata["skipped"]
  assert skipped["grayscale"] == skipped["corrupt_image"] == skipped["no_captions"] == 1
  assert skipped["duplicate_id"] == skipped["missing_image"] == skipped["invalid_utf8"] == 1
  assert metadata["num_skipped"] == 6
  good2 = next(e for e in read_split(out, "train") if e.id == "good2")
  assert good2.captions == captions_for("good2")  # The bad caption alone was dropped.
  assert not os.path.exists(tmp_path / "course" / "never")


def test_ift6266_refuses_a_malicious_pickle(tmp_path):
  marker = tmp_path / "pwned"
  make_course(tmp_path / "course", pickle_payload={"good1": Exploit(str(marker))})
  with pytest.raises(prepare.PrepareError, match="refusing .*posix.system") as caught:
    prepare.prepare("ift6266", str(tmp_path / "course"), str(tmp_path / "out"), progress=False)
  assert "\n" not in str(caught.value)
  result = run_cli(
    "--source=ift6266", f"--input={tmp_path / 'course'}", f"--output_dir={tmp_path / 'out'}"
  )
  assert_one_line_error(result, "refusing")
  assert not marker.exists() and not (tmp_path / "out").exists()


def test_coco_crops_resizes_and_skips(tmp_path):
  expected = make_coco(tmp_path / "coco")
  out = str(tmp_path / "out")
  metadata = prepare.prepare("coco", str(tmp_path / "coco"), out, vocab_size=64, progress=False)
  check_dataset(out, metadata)
  for split in records.SPLITS:
    assert {e.id for e in read_split(out, split)} == expected[split]
  skipped = metadata["skipped"]
  assert skipped["grayscale"] == skipped["corrupt_image"] == skipped["no_captions"] == 1
  assert skipped["duplicate_id"] == skipped["invalid_utf8"] == 1
  assert skipped["missing_image"] == 2  # A listed file that is absent + an unknown image id.
  assert "Lanczos" in metadata["preprocessing"]
  # The stored pixels are the centre crop of the 96x72 original, resized.
  original = Image.open(tmp_path / "coco" / "train2014" / "t1.jpg")
  crop = original.resize((64, 64), Image.Resampling.LANCZOS, box=(12, 0, 84, 72))
  t1 = next(e for e in read_split(out, "train") if e.id == "t1")
  np.testing.assert_array_equal(t1.image, np.asarray(crop))


def test_flickr_split_skips_and_grayscale_convert(tmp_path):
  num_good = make_flickr(tmp_path / "flickr")
  out = str(tmp_path / "out")
  metadata = prepare.prepare("flickr", str(tmp_path / "flickr"), out, vocab_size=64, progress=False)
  check_dataset(out, metadata)
  counts = metadata["counts"]
  assert counts["train"]["images"] + counts["validation"]["images"] == num_good
  assert counts["validation"]["images"] >= 1
  skipped = metadata["skipped"]
  assert skipped["grayscale"] == skipped["corrupt_image"] == skipped["no_captions"] == 1
  assert skipped["duplicate_id"] == skipped["missing_image"] == skipped["invalid_utf8"] == 1
  img01 = next(e for split in records.SPLITS for e in read_split(out, split) if e.id == "img01")
  assert img01.captions[-1] == 'a dog, "quoted", running'
  # The split is a function of (seed, name) only.
  names = [f"n{i}.jpg" for i in range(100)]
  train, validation = flickr.split_names(names, seed=0)
  assert len(validation) == 10 and set(train) | set(validation) == set(names)
  assert flickr.split_names(list(reversed(names)), seed=0) == (train, validation)
  assert flickr.split_names(names, seed=1) != (train, validation)

  converted = prepare.prepare(
    "flickr", str(tmp_path / "flickr"), str(tmp_path / "gray"), grayscale="convert", progress=False
  )
  assert converted["skipped"]["grayscale"] == 0
  assert sum(converted["counts"][s]["images"] for s in records.SPLITS) == num_good + 1


def test_synthetic_records_carry_their_scenes(tmp_path):
  out = str(tmp_path / "synthetic")
  metadata = prepare.prepare(
    "synthetic", "", out, num_train=12, num_validation=4, vocab_size=64, progress=False
  )
  check_dataset(out, metadata)
  train, validation = read_split(out, "train"), read_split(out, "validation")
  assert (len(train), len(validation)) == (12, 4)
  for example in train + validation:
    np.testing.assert_array_equal(scenes.render(example.scene), example.image)
    assert len(example.captions) == scenes.NUM_CAPTIONS
  train_images = {e.image.tobytes() for e in train}
  assert not any(e.image.tobytes() in train_images for e in validation)
  assert metadata["scenes"]["shapes"] == list(scenes.SHAPES)


def test_same_seed_same_records_also_with_a_pool(tmp_path):
  options = dict(num_train=24, num_validation=4, vocab_size=64, progress=False, num_shards=2)
  first = prepare.prepare("synthetic", "", str(tmp_path / "a"), workers=1, **options)
  second = prepare.prepare("synthetic", "", str(tmp_path / "b"), workers=2, **options)
  assert first["counts"] == second["counts"] and first["counts"]["train"]["shards"] == 2
  for split in records.SPLITS:
    for a, b in zip(
      records.shard_paths(str(tmp_path / "a"), split),
      records.shard_paths(str(tmp_path / "b"), split),
    ):
      with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()


def test_existing_output_is_kept_unless_overwrite(tmp_path):
  out = tmp_path / "out"
  options = dict(num_train=4, num_validation=2, vocab_size=32, progress=False)
  prepare.prepare("synthetic", "", str(out), **options)
  with pytest.raises(prepare.PrepareError, match="already exists"):
    prepare.prepare("synthetic", "", str(out), seed=1, **options)
  before = read_split(str(out), "train")[0].image
  prepare.prepare("synthetic", "", str(out), seed=1, overwrite=True, **options)
  assert not np.array_equal(read_split(str(out), "train")[0].image, before)
  assert sorted(os.listdir(tmp_path)) == ["out"]  # No temporary folders left behind.


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
  assert_one_line_error(
    run_cli("--source=flickr", f"--input={tmp_path / 'nowhere'}", f"--output_dir={tmp_path / 'o'}"),
    "folder not found",
  )
  assert_one_line_error(
    run_cli("--source=imagenet", f"--output_dir={tmp_path / 'o'}"), "unknown source"
  )
  os.makedirs(tmp_path / "empty" / "images")
  (tmp_path / "empty" / "captions.txt").write_text("image,caption\n")
  assert_one_line_error(
    run_cli("--source=flickr", f"--input={tmp_path / 'empty'}", f"--output_dir={tmp_path / 'o'}"),
    "no usable images",
  )
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "keep.txt").write_text("precious")
  assert_one_line_error(
    run_cli(
      "--source=synthetic",
      f"--output_dir={tmp_path / 'taken'}",
      "--num_train=2",
      "--num_validation=1",
    ),
    "already exists",
  )
  assert (tmp_path / "taken" / "keep.txt").read_text() == "precious"
  assert not (tmp_path / "o").exists()


# --- grey RGB files, big JPEGs, caption-table problems, a successful CLI run -------------------


def write_flickr(root, images, rows):
  """A flickr folder: `images` maps file name -> PIL image; `rows` are captions.txt lines."""
  os.makedirs(os.path.join(root, "images"))
  for name, image in images.items():
    image.save(os.path.join(root, "images", name), quality=95)
  text = "image,caption\n" + "".join(f"{row}\n" for row in rows)
  with open(os.path.join(root, "captions.txt"), "w", encoding="utf-8") as f:
    f.write(text)


def colourful(size, seed, grid=(4, 4)):
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (grid[1], grid[0], 3), dtype=np.uint8)
  return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


def grey_rgb(size, seed):
  """An RGB image (three channels stored) whose channels are all equal."""
  grey = np.asarray(colourful(size, seed).convert("L"))
  return Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB")


def test_rgb_files_without_colour_are_skipped_as_grayscale(tmp_path):
  root = tmp_path / "flickr"
  files = {
    "c1.jpg": colourful((64, 64), 1),
    "c2.png": colourful((80, 60), 2),
    "c3.jpg": colourful((90, 70), 3),
    "greyjpg.jpg": grey_rgb((64, 64), 4),
    "greypng.png": grey_rgb((80, 60), 5),
  }
  write_flickr(root, files, [f"{name},a caption of {name}" for name in files])
  for name in ("greyjpg.jpg", "greypng.png"):  # Stored as RGB, not as a grey mode.
    assert Image.open(root / "images" / name).mode == "RGB"
  out = str(tmp_path / "out")
  metadata = prepare.prepare("flickr", str(root), out, vocab_size=32, progress=False)
  check_dataset(out, metadata)
  assert metadata["skipped"]["grayscale"] == 2 and metadata["num_skipped"] == 2
  kept = {e.id for split in records.SPLITS for e in read_split(out, split)}
  assert kept == {"c1", "c2", "c3"}
  lines = skipped_lines(out)
  assert sorted(reason for reason, _ in lines) == ["grayscale", "grayscale"]
  assert all("RGB without colour" in what for _, what in lines)
  assert {os.path.basename(what.split()[0]) for _, what in lines} == {"greyjpg.jpg", "greypng.png"}
  # --grayscale=convert keeps them, as grey RGB.
  converted = prepare.prepare(
    "flickr", str(root), str(tmp_path / "convert"), grayscale="convert", progress=False
  )
  assert converted["skipped"]["grayscale"] == 0
  examples = {
    e.id: e for split in records.SPLITS for e in read_split(str(tmp_path / "convert"), split)
  }
  assert set(examples) == {"c1", "c2", "c3", "greyjpg", "greypng"}
  grey = examples["greypng"].image.astype(int)
  np.testing.assert_array_equal(grey[..., 0], grey[..., 1])
  np.testing.assert_array_equal(grey[..., 1], grey[..., 2])


def test_big_jpeg_is_drafted_then_centre_cropped_and_resized(tmp_path, monkeypatch):
  root = tmp_path / "flickr"
  big = colourful((500, 375), 7, grid=(8, 6))  # Detail across the width: the crop shows.
  files = {
    "big.jpg": big,
    "small1.jpg": colourful((64, 64), 8),
    "small2.jpg": colourful((64, 64), 9),
  }
  write_flickr(root, files, [f"{name},a caption of {name}" for name in files])
  # Record the size each JPEG is decoded at.
  decoded = {}
  original_draft = JpegImagePlugin.JpegImageFile.draft

  def draft(self, mode, size):
    result = original_draft(self, mode, size)
    decoded[os.path.basename(self.filename)] = self.size
    return result

  monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
  out = str(tmp_path / "out")
  metadata = prepare.prepare("flickr", str(root), out, vocab_size=32, progress=False)
  check_dataset(out, metadata)
  assert metadata["num_skipped"] == 0
  # Decoded at half scale (the smallest DCT scale keeping both sides >= 128), not in full.
  assert decoded == {"big.jpg": (250, 188)}
  # Expected: the full-resolution decode, centre square (62..437 x 0..375), Lanczos to 64.
  with Image.open(root / "images" / "big.jpg") as full:
    expected = np.asarray(
      full.convert("RGB").resize((64, 64), Image.Resampling.LANCZOS, box=(62, 0, 437, 375))
    ).astype(int)
  example = next(e for split in records.SPLITS for e in read_split(out, split) if e.id == "big")
  difference = np.abs(example.image.astype(int) - expected)
  # Half-scale decoding costs about 1 level on average; a 1/8-scale decode (63x47, below
  # the target's twice) is ~3.5 levels off with 16 at worst, a wrong crop far more.
  assert difference.mean() < 1.5 and difference.max() <= 10, (difference.mean(), difference.max())


def test_flickr_empty_captions_and_malformed_rows_are_skipped(tmp_path):
  root = tmp_path / "flickr"
  files = {f"p{i}.jpg": colourful((64, 64), 20 + i) for i in range(4)}
  rows = [f"p{i}.jpg,a caption of picture {i}" for i in range(4)]
  rows += [
    "p1.jpg,",  # Line 6: empty caption.
    'p2.jpg," \t "',  # Line 7: only whitespace.
    "p3.jpg",  # Line 8: no caption column at all.
    ",",  # A blank row: ignored, not counted.
  ]
  write_flickr(root, files, rows)
  out = str(tmp_path / "out")
  metadata = prepare.prepare("flickr", str(root), out, vocab_size=32, progress=False)
  check_dataset(out, metadata)
  skipped = metadata["skipped"]
  assert skipped["empty_caption"] == 2 and skipped["malformed_row"] == 1
  assert metadata["num_skipped"] == 3
  assert sorted(skipped_lines(out)) == [
    ["empty_caption", "captions.txt line 6 (p1)"],
    ["empty_caption", "captions.txt line 7 (p2)"],
    ["malformed_row", "captions.txt line 8"],
  ]
  # The images keep their good captions, and only those.
  examples = {e.id: e for split in records.SPLITS for e in read_split(out, split)}
  assert {k: e.captions for k, e in examples.items()} == {
    f"p{i}": [f"a caption of picture {i}"] for i in range(4)
  }


def test_coco_malformed_entries_and_empty_captions_are_skipped(tmp_path):
  root = tmp_path / "coco"
  os.makedirs(root / "annotations")
  for split, folder, names in [
    ("train", "train2014", ["t1", "t2"]),
    ("validation", "val2014", ["v1"]),
  ]:
    os.makedirs(root / folder)
    for i, name in enumerate(names):
      colourful((96, 72), 30 + i).save(root / folder / f"{name}.jpg")
    images = [{"id": i, "file_name": f"{name}.jpg"} for i, name in enumerate(names)]
    annotations = [{"image_id": i, "caption": f"a photo of {name}"} for i, name in enumerate(names)]
    if split == "train":
      images += [
        {"id": 10, "file_name": "../v1.jpg"},  # images[2]: leaves the folder.
        {"id": 11},  # images[3]: no file name.
        "t1.jpg",  # images[4]: not an object.
      ]
      annotations += [
        {"image_id": 0, "caption": 42},  # annotations[2]: not text.
        {"image_id": 0},  # annotations[3]: no caption.
        {"image_id": 1, "caption": "  \n "},  # annotations[4]: empty once trimmed.
        {"image_id": 1, "caption": ""},  # annotations[5]: empty.
      ]
    with open(root / "annotations" / f"captions_{folder}.json", "w") as f:
      json.dump({"images": images, "annotations": annotations}, f)
  out = str(tmp_path / "out")
  metadata = prepare.prepare("coco", str(root), out, vocab_size=32, progress=False)
  check_dataset(out, metadata)
  name = "captions_train2014.json"
  assert sorted(skipped_lines(out)) == [
    ["empty_caption", f"{name} annotations[4] (t2)"],
    ["empty_caption", f"{name} annotations[5] (t2)"],
    ["malformed_row", f"{name} annotations[2]"],
    ["malformed_row", f"{name} annotations[3]"],
    ["malformed_row", f"{name} images[2]"],
    ["malformed_row", f"{name} images[3]"],
    ["malformed_row", f"{name} images[4]"],
  ]
  assert metadata["skipped"]["malformed_row"] == 5 and metadata["skipped"]["empty_caption"] == 2
  assert {e.id: e.captions for e in read_split(out, "train")} == {
    "t1": ["a photo of t1"],
    "t2": ["a photo of t2"],
  }


def test_cli_success_writes_a_dataset_and_prints_its_summary(tmp_path):
  out = tmp_path / "cli"
  result = run_cli(
    "--source=synthetic",
    f"--output_dir={out}",
    "--num_train=6",
    "--num_validation=2",
    "--vocab_size=48",
  )
  assert result.returncode == 0, result.stderr
  metadata = records.read_metadata(str(out))
  assert os.path.isfile(out / records.METADATA_FILE)
  check_dataset(str(out), metadata)
  assert metadata["counts"]["train"]["images"] == 6
  assert metadata["counts"]["validation"]["images"] == 2
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary == {"output_dir": str(out), "counts": metadata["counts"], "skipped": {}}
