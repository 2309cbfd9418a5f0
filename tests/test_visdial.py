"""--source=visdial on a tiny fixture in the official VisDial 1.0 + COCO 2014 layout."""

import json
import os

import pytest

from data_prep import prepare
from data_prep.core import PrepareError
from inpainting import records, tokenizer
from tests.test_prepare import BAD_UTF8, check_dataset, read_split, skipped_lines, write_image

QUESTIONS = [
  "is the photo in color",
  "how many people are  there",  # Whitespace is normalised.
  "is it sunny",
  "is there a zebra",  # "z" occurs in the dialogue only: the tokenizer must learn it.
  "what colour is the bus",
]
ANSWERS = ["yes", "2", "no", "i can't tell", "red and white"]
NUM_ROUNDS = 10


def coco_name(folder, image_id):
  return f"COCO_{folder}_{image_id:012d}.jpg"


def rounds(offset):
  return [
    {
      "question": (offset + r) % len(QUESTIONS),
      "answer": (offset + 2 * r) % len(ANSWERS),
      "answer_options": list(range(100)),
      "gt_index": r,
    }
    for r in range(NUM_ROUNDS)
  ]


def expected_dialogue(offset):
  return [
    {
      "question": " ".join(QUESTIONS[(offset + r) % len(QUESTIONS)].split()),
      "answer": ANSWERS[(offset + 2 * r) % len(ANSWERS)],
      "reveals": "",
    }
    for r in range(NUM_ROUNDS)
  ]


def dialog(image_id, offset, caption=None, **changes):
  entry = {
    "image_id": image_id,
    "caption": caption or f"a photo of thing number {image_id} on a table",
    "dialog": rounds(offset),
  }
  for r, change in changes.get("round", {}).items():
    entry["dialog"][r] = change(entry["dialog"][r])
  return entry


def without(key):
  return lambda entry: {k: v for k, v in entry.items() if k != key}


def make_visdial(root):
  """The fixture: per split, (kept record ids, {id: (caption, dialogue)}), skips below."""
  for image_id in (1, 2, 3, 4, 5):
    write_image(os.path.join(root, "train2014", coco_name("train2014", image_id)), seed=image_id)
  for image_id in (10, 11, 12, 13, 14):
    write_image(os.path.join(root, "val2014", coco_name("val2014", image_id)), seed=image_id)
  os.makedirs(os.path.join(root, "annotations"))  # COCO's captions: not read.
  train = [
    dialog(1, 0),
    dialog(2, 1, caption="two   cats\ton a sofa"),
    dialog(12, 2),  # VisDial 1.0 train also uses COCO val2014 images.
    dialog(99, 3),  # missing_image
    dialog(3, 0, round={4: lambda e: {**e, "question": 999}}),  # out_of_range
    dialog(4, 0, round={2: without("answer")}),  # malformed_row
    {"image_id": "5", "caption": "a string id", "dialog": rounds(0)},  # malformed_row
    dialog(1, 4),  # duplicate_id
    dialog(5, 0, round={9: lambda e: {**e, "answer": "3"}}),  # malformed_row (not an int)
    dialog(13, 0, caption="PLACEHOLDER"),  # invalid_utf8
  ]
  validation = [
    dialog(10, 3),
    dialog(11, 4),
    dialog(14, 0, round={0: lambda e: {**e, "answer": -1}}),  # out_of_range
  ]
  for name, dialogs, split in [
    ("visdial_1.0_train.json", train, "train"),
    ("visdial_1.0_val.json", validation, "val"),
  ]:
    content = {
      "version": "1.0",
      "split": split,
      "data": {"questions": QUESTIONS, "answers": ANSWERS, "dialogs": dialogs},
    }
    with open(os.path.join(root, name), "wb") as f:
      f.write(json.dumps(content).encode().replace(b"PLACEHOLDER", BAD_UTF8))
  return {
    "train": {
      "COCO_train2014_000000000001": ("a photo of thing number 1 on a table", 0),
      "COCO_train2014_000000000002": ("two cats on a sofa", 1),
      "COCO_val2014_000000000012": ("a photo of thing number 12 on a table", 2),
    },
    "validation": {
      "COCO_val2014_000000000010": ("a photo of thing number 10 on a table", 3),
      "COCO_val2014_000000000011": ("a photo of thing number 11 on a table", 4),
    },
  }


def test_visdial_joins_dialogs_to_coco_images_and_skips_bad_ones(tmp_path):
  expected = make_visdial(tmp_path / "visdial")
  out = str(tmp_path / "out")
  metadata = prepare.prepare(
    "visdial", str(tmp_path / "visdial"), out, vocab_size=64, progress=False
  )
  check_dataset(out, metadata)
  assert metadata["source"] == "visdial" and metadata["format_version"] == records.FORMAT_VERSION
  for split in records.SPLITS:
    examples = read_split(out, split)
    assert {e.id: e for e in examples}.keys() == expected[split].keys()
    assert metadata["counts"][split]["images"] == metadata["counts"][split]["captions"]
    for example in examples:
      caption, offset = expected[split][example.id]
      assert example.captions == [caption]
      assert example.dialogue == expected_dialogue(offset)
      assert (example.context_caption, example.scene) == ("", None)
  skipped = {reason: n for reason, n in metadata["skipped"].items() if n}
  assert skipped == {
    "missing_image": 1,
    "out_of_range": 2,
    "malformed_row": 3,
    "duplicate_id": 1,
    "invalid_utf8": 1,
  }
  lines = ["\t".join(line) for line in skipped_lines(out)]
  assert any("visdial_1.0_train.json dialogs[4] (image 3): round 4" in line for line in lines)
  assert any("visdial_1.0_val.json dialogs[2] (image 14): round 0" in line for line in lines)
  assert any(line.startswith("missing_image\t") and "image 99" in line for line in lines)
  # The tokenizer learned the dialogue's text, not only the captions'.
  learned = tokenizer.Tokenizer(os.path.join(out, records.TOKENIZER_FILE))
  assert tokenizer.UNK_ID not in learned.encode(["is there a zebra"], 16)[0]


def test_visdial_input_errors_are_one_line(tmp_path):
  root = tmp_path / "visdial"
  make_visdial(root)
  os.remove(root / "visdial_1.0_val.json")
  with pytest.raises(PrepareError, match="file not found: .*visdial_1.0_val.json"):
    prepare.prepare("visdial", str(root), str(tmp_path / "a"), progress=False)
  (root / "visdial_1.0_val.json").write_text("{not json")
  with pytest.raises(PrepareError, match="not valid JSON"):
    prepare.prepare("visdial", str(root), str(tmp_path / "b"), progress=False)
  (root / "visdial_1.0_val.json").write_text(json.dumps({"version": "1.0", "data": {}}))
  with pytest.raises(PrepareError, match="lacks the VisDial 'data' object"):
    prepare.prepare("visdial", str(root), str(tmp_path / "c"), progress=False)
  empty = tmp_path / "empty"
  empty.mkdir()
  for name in ("visdial_1.0_train.json", "visdial_1.0_val.json"):
    (empty / name).write_text(json.dumps({"data": {"questions": [], "answers": [], "dialogs": []}}))
  with pytest.raises(PrepareError, match="no COCO image folder"):
    prepare.prepare("visdial", str(empty), str(tmp_path / "d"), progress=False)
