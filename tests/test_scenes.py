"""The synthetic scenes: determinism, exact re-rendering, one hidden centre object, captions."""

import itertools
import json

import numpy as np
import pytest

from inpainting import scenes

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
  for index in INDICES:
    _, scene, captions = scenes.generate(0, index)
    center = scene["objects"][0]
    assert len(captions) == 5 and len(set(captions)) == 5
    for caption in captions:
      assert f"{center['size']} {center['color']} {center['shape']}" in caption
  assert len(scenes.SHAPES) >= 5 and len(scenes.COLORS) >= 8 and scenes.SIZES == ("small", "large")


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
