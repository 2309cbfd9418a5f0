"""The synthetic scenes: determinism, exact re-rendering, one hidden centre object, captions."""

import itertools
import json

import numpy as np
import pytest

from configs import common
from inpainting import scenes, tokenizer

HOLE = slice(scenes.HOLE_START, scenes.HOLE_END)
INDICES = range(40)


def hole_mask() -> np.ndarray:
  mask = np.zeros((scenes.IMAGE_SIZE, scenes.IMAGE_SIZE), bool)
  mask[HOLE, HOLE] = True
  return mask


def without(scene, keep):
  """The scene with only the objects whose positions are in `keep`."""
  return {"background": scene["background"], "objects": [scene["objects"][i] for i in keep]}


def test_generate_is_deterministic_and_varied():
  image, scene, captions = scenes.generate(3, 7)
  again = scenes.generate(3, 7)
  np.testing.assert_array_equal(image, again[0])
  assert scene == again[1] and captions == again[2]
  assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
  others = [scenes.generate(seed, index)[0] for seed, index in [(3, 8), (4, 7)]]
  assert all(not np.array_equal(image, other) for other in others)


@pytest.mark.parametrize("index", INDICES)
def test_render_reproduces_the_image_exactly(index):
  image, scene, _ = scenes.generate(0, index)
  # Through JSON, as the records store it.
  np.testing.assert_array_equal(scenes.render(json.loads(json.dumps(scene))), image)


def test_exactly_one_object_in_the_hole():
  mask = hole_mask()
  for index in INDICES:
    image, scene, _ = scenes.generate(1, index)
    objects = scene["objects"]
    assert 2 <= len(objects) <= 4
    everything = range(len(objects))
    border_only = scenes.render(without(scene, everything[1:]))
    background = scenes.render(without(scene, []))
    # The centre object changes only hole pixels, and changes them.
    np.testing.assert_array_equal(border_only[~mask], image[~mask])
    assert np.abs(border_only[mask].astype(int) - image[mask]).max() > 50
    # Border objects never reach into the hole, and each one is visible.
    np.testing.assert_array_equal(scenes.render(without(scene, [0]))[mask], image[mask])
    for i in everything[1:]:
      alone = scenes.render(without(scene, [i]))
      assert np.abs(alone.astype(int) - background).max() > 50


def test_objects_stand_out_from_the_background():
  for index in INDICES:
    _, scene, _ = scenes.generate(2, index)
    background = scenes.render(without(scene, [])).astype(float)
    for obj in scene["objects"]:
      x, y = int(obj["x"]), int(obj["y"])
      distance = np.linalg.norm(background[y, x] - scenes.COLORS[obj["color"]])
      assert distance > 50, (index, obj)


def test_captions_name_the_centre_object():
  forms, context_first, no_location = set(), 0, 0
  for index in INDICES:
    _, scene, captions = scenes.generate(0, index)
    center = scene["objects"][0]
    assert len(captions) == 5 and len(set(captions)) == 5
    for caption in captions:
      named = [p for p in scenes.center_phrases(center) if p in caption]
      assert named, caption
      forms.update(named)
      borders = [caption.find(scenes._describe(o)) for o in scene["objects"][1:]]
      context_first += any(-1 < b < caption.index(named[0]) for b in borders)
      no_location += not any(w in caption for w in ("middle", "centre", "center"))
  # The attribute order and the clause order vary.
  assert len(forms) >= 3 and context_first > 0 and no_location > 0
  assert len(scenes.SHAPES) >= 5 and len(scenes.COLORS) >= 8 and scenes.SIZES == ("small", "large")


def test_every_centre_phrase_names_each_attribute_once():
  center = {"size": "small", "color": "red", "shape": "star"}
  phrases = scenes.center_phrases(center)
  assert len(set(phrases)) == len(scenes.CENTER_FORMS) >= 3
  for phrase in phrases:
    words = phrase.replace(",", " ").split()
    assert all(words.count(center[k]) == 1 for k in center), phrase
  orders = {tuple(sorted(center, key=lambda k, p=p: p.index(center[k]))) for p in phrases}
  assert len(orders) == len(phrases)  # Each form orders the attributes differently.


def test_the_enumeration_holds_every_caption_written():
  for index in range(10):
    _, scene, captions = scenes.generate(4, index)
    possible = scenes.possible_captions(scene)
    assert set(captions) <= possible
    written = set()
    for seed in range(200):
      written.update(scenes._captions(np.random.default_rng(seed), scene))
    assert written <= possible and len(written) > len(scenes._TEMPLATES)


def test_every_centre_phrase_survives_the_main_configs_caption_length(tmp_path):
  # The prefix of every template up to the end of its centre phrase, for every phrase form
  # and context choice, tokenised as a run would (a tokenizer trained on the captions).
  generated = [scenes.generate(6, i) for i in range(300)]
  path = str(tmp_path / "tokenizer.model")
  tokenizer.train([c for _, _, captions in generated for c in captions], path, 512)
  max_length = common.base().data.max_caption_length
  prefixes = []
  for _, scene, _ in generated[:60]:
    center, border = scene["objects"][0], scene["objects"][1:]
    background = scenes._background_phrase(scene["background"])
    for template in scenes._TEMPLATES:
      cut = template[: template.index("{center}") + len("{center}")]
      count = scenes._most_mentioned(template, border)
      for chosen in itertools.permutations(range(len(border)), count):
        context = scenes._context(border, chosen)
        for phrase in scenes.center_phrases(center):
          prefixes.append(cut.format(center=phrase, context=context, background=background))
  _, mask = tokenizer.Tokenizer(path).encode(prefixes, 4 * max_length)
  lengths = mask.sum(1)  # BOS, the pieces, EOS.
  assert lengths.max() <= max_length, prefixes[int(lengths.argmax())]
  assert lengths.max() >= max_length - 6  # Context-first prefixes come close: the check bites.


def test_with_center_changes_only_the_hole_and_every_candidate_differs():
  mask = hole_mask()
  _, scene, _ = scenes.generate(5, 11)
  original = json.dumps(scene)
  candidates = list(itertools.product(scenes.SHAPES, scenes.COLORS, scenes.SIZES))
  renders = np.stack([scenes.render(scenes.with_center(scene, *c)) for c in candidates])
  assert json.dumps(scene) == original  # The input is not modified.
  np.testing.assert_array_equal(
    renders[:, ~mask], np.broadcast_to(renders[0, ~mask], renders[:, ~mask].shape)
  )
  holes = renders[:, mask].reshape(len(candidates), -1).astype(np.float32)
  squared = (holes**2).sum(1)
  distances = squared[:, None] + squared[None] - 2 * holes @ holes.T
  np.fill_diagonal(distances, np.inf)
  # Each pair differs by at least ~ 10 pixels fully recoloured.
  assert distances.min() > 10 * 3 * 40**2
  center = scene["objects"][0]
  same = scenes.with_center(scene, center["shape"], center["color"], center["size"])
  np.testing.assert_array_equal(scenes.render(same), scenes.render(scene))
  with pytest.raises(ValueError):
    scenes.with_center(scene, "hexagon", "red", "small")
