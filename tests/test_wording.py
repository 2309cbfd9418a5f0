"""Held-out caption wordings (inpainting/metrics/wording.py): right words, never the
generator's, covered by a run's tokenizer; batches re-captioned from each example's scene."""

import json
import os

import numpy as np
import pytest
import sentencepiece as spm

from inpainting import input_pipeline, records, scenes
from inpainting.metrics import wording
from inpainting.tokenizer import EOS_ID, UNK_ID, Tokenizer

# The tests' own held-out wordings, independent of the module's: the helper must work with
# any template set, and these must pass the same checks.
TEST_TEMPLATES = (
  "we see {context} and, in the middle, {center}",
  "{size} and {color}, a {shape}",
  "{shape} {color} {size}",
  "one {color} {shape} among {context}; it is {size}",
)
NUM_SCENES = 24


@pytest.fixture(scope="module")
def scene_list():
  return [scenes.generate(5, i)[1] for i in range(NUM_SCENES)]


def _all_captions(scene_list, templates):
  """(scene, caption) for every scene, every template and every context variant."""
  return [
    (scene, text)
    for i, scene in enumerate(scene_list)
    for text, _ in wording.candidates(scene, i, templates=templates)
  ]


def test_heldout_templates_are_not_the_generators():
  assert len(wording.HELDOUT_TEMPLATES) >= 8
  assert len(set(wording.HELDOUT_TEMPLATES)) == len(wording.HELDOUT_TEMPLATES)
  assert not set(wording.HELDOUT_TEMPLATES) & set(scenes._TEMPLATES)
  assert not set(TEST_TEMPLATES) & set(scenes._TEMPLATES)


@pytest.mark.parametrize("templates", [wording.HELDOUT_TEMPLATES, TEST_TEMPLATES])
def test_captions_name_the_centre_attributes(scene_list, templates):
  for scene, text in _all_captions(scene_list, templates):
    words = text.replace(",", " ").replace(";", " ").split()
    center = scene["objects"][0]
    for name in ("size", "color", "shape"):
      assert center[name] in words, (name, text)


@pytest.mark.parametrize("templates", [wording.HELDOUT_TEMPLATES, TEST_TEMPLATES])
def test_captions_are_never_a_generator_caption(scene_list, templates):
  for i, scene in enumerate(scene_list):
    produced = scenes.possible_captions(scene)
    assert len(produced) >= len(scenes._TEMPLATES)  # The enumeration works.
    assert set(scenes._captions(np.random.default_rng(0), scene)) <= produced
    options = [text for text, _ in wording.candidates(scene, i, templates=templates)]
    assert len(options) >= len(templates)
    assert not set(options) & produced


def test_every_template_is_used_and_deterministic(scene_list):
  n = len(wording.HELDOUT_TEMPLATES)
  scene = scene_list[0]
  captions = [wording.caption(scene, i) for i in range(n)]
  assert len(set(captions)) == n  # Consecutive examples cycle through all templates.
  assert captions == [wording.caption(scene, i) for i in range(n)]
  # Some name a context object before the centre object; some have no location word.
  center = scenes._describe(scene["objects"][0])
  border = [scenes._describe(o) for o in scene["objects"][1:]]
  context_first = [
    c for c in captions if center in c and any(-1 < c.find(b) < c.index(center) for b in border)
  ]
  assert context_first
  assert any(not any(w in c for w in ("middle", "centre", "center")) for c in captions)


def _unknown_fraction(tokenizer, captions):
  tokens, mask = tokenizer.encode(captions, 256)
  return float((tokens[mask] == UNK_ID).mean())


@pytest.mark.parametrize("templates", [wording.HELDOUT_TEMPLATES, TEST_TEMPLATES])
def test_a_runs_tokenizer_covers_the_heldout_words(data_dir, scene_list, templates):
  tokenizer = Tokenizer(os.path.join(data_dir, records.TOKENIZER_FILE))
  captions = [text for _, text in _all_captions(scene_list, templates)]
  assert _unknown_fraction(tokenizer, captions) <= 0.005
  # The check has teeth: characters the generator never writes are unknown.
  assert _unknown_fraction(tokenizer, ["a violet @ [#] {~} %&"]) > 0.2


@pytest.fixture(scope="module")
def pipeline_batch(data_dir, smoke_config):
  config = smoke_config(**{"data.dir": data_dir})
  dataset = input_pipeline.create_dataset(
    data_dir, "validation", config.data, 8, seed=0, train=False, caption_mode="first"
  )
  return config, next(iter(dataset))


@pytest.mark.parametrize("templates", [wording.HELDOUT_TEMPLATES, TEST_TEMPLATES])
def test_batches_recaption_each_example_from_its_scene(data_dir, pipeline_batch, templates):
  config, first = pipeline_batch
  tokenizer_path = os.path.join(data_dir, records.TOKENIZER_FILE)
  tokenizer = Tokenizer(tokenizer_path)
  length = config.data.max_caption_length
  found = list(
    wording.batches(
      data_dir, "validation", config.data, tokenizer_path, 12, 8, seed=3, templates=templates
    )
  )
  assert [len(b["image"]) for b in found] == [8, 4]  # The limit, in record order.
  batch = found[0]
  for key in ("image", "mask", "scene", "index", "id"):
    np.testing.assert_array_equal(batch[key], first[key], err_msg=key)
  expected = [
    wording.fitting_caption(json.loads(s), int(i), tokenizer, length, 3, templates)
    for s, i in zip(batch["scene"], batch["index"])
  ]
  assert list(batch["caption"]) == expected
  assert not set(expected) & set(first["caption"])
  tokens, token_mask = tokenizer.encode(expected, length)
  np.testing.assert_array_equal(batch["tokens"], tokens)
  np.testing.assert_array_equal(batch["token_mask"], token_mask)
  assert not np.array_equal(batch["tokens"], first["tokens"])


def _decoded(data_dir, tokens) -> list[str]:
  """The text the model sees: the token ids decoded by SentencePiece itself."""
  processor = spm.SentencePieceProcessor(model_file=os.path.join(data_dir, records.TOKENIZER_FILE))
  return [processor.decode([int(t) for t in row if t > EOS_ID]) for row in tokens]


def test_the_centre_object_survives_the_caption_length(data_dir, smoke_config):
  """At the run's caption length (24 tokens) every re-captioned example still names its
  centre object's three attributes in the tokens the model gets; the context-first
  wordings are among them (with shorter context than they would prefer)."""
  config = smoke_config(**{"data.dir": data_dir})
  tokenizer_path = os.path.join(data_dir, records.TOKENIZER_FILE)
  batch = next(iter(wording.batches(data_dir, "validation", config.data, tokenizer_path, 64, 64)))
  seen = _decoded(data_dir, batch["tokens"])
  context_first = 0
  for text, caption, scene in zip(seen, batch["caption"], batch["scene"]):
    objects = json.loads(scene)["objects"]
    words = text.replace(",", " ").replace(";", " ").split()
    for name in ("size", "color", "shape"):
      assert objects[0][name] in words, (name, text, caption)
    center = scenes._describe(objects[0])
    if center in caption:
      border = [caption.find(scenes._describe(o)) for o in objects[1:]]
      context_first += any(-1 < b < caption.index(center) for b in border)
  assert context_first >= 4
  # Preferring the richest context would cut the centre object off for some of them.
  preferred = [
    wording.caption(json.loads(s), int(i)) for s, i in zip(batch["scene"], batch["index"])
  ]
  tokens, _ = Tokenizer(tokenizer_path).encode(preferred, config.data.max_caption_length)
  cut = [
    text
    for text, scene in zip(_decoded(data_dir, tokens), batch["scene"])
    if json.loads(scene)["objects"][0]["shape"] not in text.split()
  ]
  assert cut


def test_reword_needs_scenes(data_dir, pipeline_batch):
  _, first = pipeline_batch
  photos = {**first, "scene": np.array([""] * len(first["scene"]))}
  tokenizer = Tokenizer(os.path.join(data_dir, records.TOKENIZER_FILE))
  with pytest.raises(ValueError, match="synthetic scenes"):
    wording.reword_batch(photos, tokenizer, 32)
