"""Synthetic conversations (context caption + dialogue) and record format version 3."""

import collections
import itertools
import json
import re

import numpy as np
import pytest

from data_prep import prepare, tfds_export
from inpainting import records, scenes, tokenizer
from tests.test_prepare import check_dataset, read_split

# Scenes of two streams, train and validation indices.
SCENES = [(seed, index) for seed in (0, 1) for index in range(150)] + [
  (0, (1 << 40) + index) for index in range(50)
]
VALUES = {"shape": scenes.SHAPES, "color": tuple(scenes.COLORS), "size": scenes.SIZES}
DESCRIPTION = re.compile(
  rf"\ba (?P<size>{'|'.join(scenes.SIZES)}) (?P<color>{'|'.join(scenes.COLORS)}) "
  rf"(?P<shape>{'|'.join(scenes.SHAPES)})\b"
)


def words(text):
  return set(re.findall(r"[a-z]+", text))


def conversations():
  for seed, index in SCENES:
    _, scene, _ = scenes.generate(seed, index)
    yield scene, *scenes.conversation(seed, index, scene)


def test_conversation_is_deterministic_and_leaves_the_scene_stream_alone():
  image, scene, captions = scenes.generate(3, 7)
  context, dialogue = scenes.conversation(3, 7, scene)
  assert (context, dialogue) == scenes.conversation(3, 7, json.loads(json.dumps(scene)))
  again = scenes.generate(3, 7)  # The conversation's own stream: nothing else moved.
  np.testing.assert_array_equal(image, again[0])
  assert (scene, captions) == again[1:]
  others = [scenes.conversation(s, i, scenes.generate(s, i)[1]) for s, i in [(3, 8), (4, 7)]]
  assert all(other != (context, dialogue) for other in others)


def test_every_turn_reveals_one_attribute_of_the_centre_object():
  for scene, _, dialogue in conversations():
    center = scene["objects"][0]
    assert len(dialogue) == scenes.NUM_TURNS == 3
    assert sorted(turn["reveals"] for turn in dialogue) == sorted(scenes.ATTRIBUTES)
    for turn in dialogue:
      assert set(turn) == {"question", "answer", "reveals"}
      assert turn["question"].endswith("?")
      attribute, value = turn["reveals"], center[turn["reveals"]]
      answer = words(turn["answer"])
      # The answer names the value, and no other value of any attribute.
      assert value in answer, (turn, center)
      for name, values in VALUES.items():
        named = answer & set(values)
        assert named == ({value} if name == attribute else set()), (turn, center)
      # Questions name no shape or colour (size questions may ask "is it small?").
      assert not words(turn["question"]) & (set(scenes.SHAPES) | set(scenes.COLORS))


def test_order_and_wording_vary_across_scenes():
  orders, questions, answers = collections.Counter(), collections.defaultdict(set), set()
  for _, _, dialogue in conversations():
    orders[tuple(turn["reveals"] for turn in dialogue)] += 1
    for turn in dialogue:
      questions[turn["reveals"]].add(turn["question"])
      answers.add(
        re.sub(r"\b(" + "|".join(itertools.chain(*VALUES.values())) + r")\b", "_", turn["answer"])
      )
  assert set(orders) == set(itertools.permutations(scenes.ATTRIBUTES))
  assert min(orders.values()) >= len(SCENES) / 6 / 2  # Roughly uniform.
  assert all(len(questions[attribute]) >= 3 for attribute in scenes.ATTRIBUTES)
  assert len(answers) >= 10
  # Size questions are asked both ways; "no" answers name the true size.
  size_turns = [t for _, _, d in conversations() for t in d if t["reveals"] == "size"]
  assert any(t["answer"].startswith("no, ") for t in size_turns)
  assert any(t["answer"].startswith("yes, ") for t in size_turns)


def test_context_caption_describes_the_border_and_background_never_the_centre():
  shared, templates = 0, set()
  for scene, context, _ in conversations():
    center, border = scene["objects"][0], scene["objects"][1:]
    described = sorted(m.group(0) for m in DESCRIPTION.finditer(context))
    assert described == sorted(scenes._describe(obj) for obj in border), context
    assert scenes._background_phrase(scene["background"]) in context
    if scenes._describe(center) in {scenes._describe(obj) for obj in border}:
      shared += 1  # A border object looks like the centre one: its words may appear.
      continue
    assert scenes._describe(center) not in context
    # No attribute word outside the border objects' descriptions.
    rest = DESCRIPTION.sub("", context)
    assert not words(rest) & set(itertools.chain(*VALUES.values())), context
    background = re.escape(scenes._background_phrase(scene["background"]))
    matches = [
      template
      for template in scenes._CONTEXT_TEMPLATES
      if re.fullmatch(
        re.escape(template).replace(r"\{objects\}", ".+").replace(r"\{background\}", background),
        context,
      )
    ]
    assert matches, context
    templates.update(matches)
  assert shared < len(SCENES) / 10 and len(templates) >= len(scenes._CONTEXT_TEMPLATES) - 1


# --- records ----------------------------------------------------------------------------------

IMAGE = np.arange(64 * 64 * 3, dtype=np.uint32).astype(np.uint8).reshape(64, 64, 3)
TURNS = [
  {"question": "what is in the middle?", "answer": "a star", "reveals": "shape"},
  {"question": "is it big?", "answer": "no, small", "reveals": "size"},
]


def version_2_record(example):
  """A record exactly as format version 2's `encode` wrote it (no conversation fields)."""
  header = {"id": example.id, "captions": example.captions}
  if example.scene is not None:
    header["scene"] = example.scene
  compact = dict(ensure_ascii=False, separators=(",", ":"))
  scene = json.dumps(example.scene, **compact) if example.scene is not None else ""
  return records._field(
    records._entry(b"_header", [json.dumps(header, **compact).encode()])
    + records._entry(b"captions", [c.encode() for c in example.captions])
    + records._entry(b"id", [example.id.encode()])
    + records._entry(b"scene", [scene.encode()])
    + records._entry(b"image", [example.image.tobytes()])
  )


def test_version_3_records_carry_the_conversation_and_version_2_reads_as_none():
  assert records.FORMAT_VERSION == 3
  example = records.Example(
    "x", IMAGE, ["a small red star"], {"objects": []}, context_caption="a café", dialogue=TURNS
  )
  record = records.encode(example)
  for decoded in (records.decode(record), records._decode_any_example(record)):
    assert (decoded.context_caption, decoded.dialogue) == ("a café", TURNS)
    assert (decoded.id, decoded.captions, decoded.scene) == (
      "x",
      ["a small red star"],
      {"objects": []},
    )
  parsed = tfds_export.features().deserialize_example_np(record)
  assert parsed["context_caption"].decode() == "a café"
  assert json.loads(parsed["dialogue"]) == TURNS
  # No conversation: nothing in `_header`, empty features.
  plain = records.Example("p", IMAGE, ["a photo"])
  record = records.encode(plain)
  assert b'"dialogue"' not in record and b'"context_caption"' not in record
  parsed = tfds_export.features().deserialize_example_np(record)
  assert parsed["context_caption"] == parsed["dialogue"] == b""
  # Format version 2, by our fast path and by protobuf (as TFDS writes version 2 features).
  old = version_2_record(example)
  for decoded in (records.decode(old), records._decode_any_example(old)):
    assert (decoded.context_caption, decoded.dialogue) == ("", [])
    assert (decoded.id, decoded.captions, decoded.scene) == (
      "x",
      ["a small red star"],
      {"objects": []},
    )
    np.testing.assert_array_equal(decoded.image, IMAGE)


@pytest.mark.parametrize(
  "dialogue",
  [
    "what?",
    [{"question": "q", "answer": "a"}],
    [{"question": "q", "answer": 1, "reveals": ""}],
    [["q", "a", ""]],
  ],
)
def test_malformed_dialogues_are_refused(dialogue):
  with pytest.raises(ValueError, match="dialogue"):
    records.encode(records.Example("x", IMAGE, ["c"], dialogue=dialogue))


# --- the synthetic source -----------------------------------------------------------------------


def test_synthetic_records_carry_their_conversation_and_the_tokenizer_learns_it(tmp_path):
  out = str(tmp_path / "synthetic")
  metadata = prepare.prepare(
    "synthetic", "", out, num_train=8, num_validation=2, vocab_size=64, progress=False
  )
  check_dataset(out, metadata)
  assert metadata["format_version"] == 3 and metadata["scenes"]["dialogue_turns"] == 3
  for split, offset in (
    ("train", 0),
    ("validation", metadata["scenes"]["validation_index_offset"]),
  ):
    for i, example in enumerate(read_split(out, split)):
      image, scene, captions = scenes.generate(0, offset + i)
      np.testing.assert_array_equal(example.image, image)  # Unchanged by the conversation.
      assert (example.scene, example.captions) == (scene, captions)
      assert (example.context_caption, example.dialogue) == scenes.conversation(
        0, offset + i, scene
      )
  # "?" occurs in questions only: a tokenizer of the captions alone cannot encode it.
  learned = tokenizer.Tokenizer(f"{out}/{records.TOKENIZER_FILE}")
  question = "what is in the middle? which colour is it?"
  assert tokenizer.UNK_ID not in learned.encode([question], 24)[0]
  captions_only = str(tmp_path / "captions.model")
  tokenizer.train([c for e in read_split(out, "train") for c in e.captions], captions_only, 64)
  assert tokenizer.UNK_ID in tokenizer.Tokenizer(captions_only).encode([question], 24)[0]


def test_text_sources_feed_the_model_the_chosen_part_of_the_conversation(tmp_path):
  import ml_collections  # noqa: PLC0415

  from configs import common  # noqa: PLC0415
  from inpainting import batching, input_pipeline  # noqa: PLC0415

  out = str(tmp_path / "synthetic")
  prepare.prepare(
    "synthetic", "", out, num_train=6, num_validation=4, vocab_size=64, progress=False
  )
  examples = list(read_split(out, "validation"))

  def texts(source):
    data = ml_collections.ConfigDict(common.base().data.to_dict())
    data.text_source, data.max_caption_length, data.caption = source, 64, "first"
    ds = input_pipeline.create_dataset(out, "validation", data, 4, seed=0, train=False)
    (batch,) = list(ds)
    return list(batch["caption"])

  assert texts("caption") == [e.captions[0] for e in examples]
  for example, context, full, two, turns in zip(
    examples, texts("context"), texts("dialogue"), texts("dialogue:2"), texts("turns")
  ):
    said = [f"{t['question']} {t['answer']}" for t in example.dialogue]
    assert context == example.context_caption == texts("dialogue:0")[examples.index(example)]
    assert full == " ".join([example.context_caption, *said])
    assert two == " ".join([example.context_caption, *said[:2]])
    assert turns == " ".join(said) and example.context_caption not in turns
    # Only the turns name the centre object's shape (the context never does, unless a
    # border object shares it).
    center = example.scene["objects"][0]["shape"]
    assert center in turns

  # turns:any reads every turn outside training; in training, each example a prefix of
  # 0..3 turns, fixed by its stream position (the same batch twice: the same texts).
  assert texts("turns:any") == texts("turns")
  data = ml_collections.ConfigDict(common.base().data.to_dict())
  data.text_source, data.max_caption_length = "turns:any", 64
  out_train = str(tmp_path / "synthetic_train")
  prepare.prepare(
    "synthetic", "", out_train, num_train=64, num_validation=4, vocab_size=64, progress=False
  )
  by_id = {e.id: e for e in read_split(out_train, "train")}

  def training_texts():
    ds = input_pipeline.create_dataset(out_train, "train", data, 32, seed=3, train=True)
    batches = [batch for _, batch in zip(range(2), ds)]
    return [(i, c) for b in batches for i, c in zip(b["id"], b["caption"])]

  drawn = training_texts()
  assert drawn == training_texts()
  lengths = []
  for example_id, text in drawn:
    said = [f"{t['question']} {t['answer']}" for t in by_id[example_id].dialogue]
    prefixes = [" ".join(said[:n]) for n in range(len(said) + 1)]
    assert text in prefixes, text
    lengths.append(prefixes.index(text))
  assert set(lengths) == {0, 1, 2, 3}  # Every prefix length is drawn.

  with pytest.raises(ValueError, match="unknown text source 'dialog'"):
    batching.parse_text_source("dialog")
  with pytest.raises(ValueError, match="unknown text source 'turns:some'"):
    batching.parse_text_source("turns:some")
  # A record without a conversation (other sources, format 1-2): a one-line error.
  bare = records.Example(id="x", image=examples[0].image, captions=examples[0].captions)
  with pytest.raises(ValueError, match="needs records with a context caption"):
    batching.conversation_text(bare, "turns")
