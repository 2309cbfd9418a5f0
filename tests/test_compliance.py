"""Caption compliance: the renderer's images score 100%, a grey fill about chance."""

import numpy as np
import pytest

from inpainting import scenes
from inpainting.metrics import compliance

NUM_SCENES = 16


@pytest.fixture(scope="module")
def data():
  generated = [scenes.generate(7, i) for i in range(NUM_SCENES)]
  images = np.stack([g[0] for g in generated]).astype(np.float32) / 127.5 - 1.0
  mask = np.zeros((NUM_SCENES, 64, 64, 1), np.float32)
  mask[:, 16:48, 16:48] = 1.0
  renderer = compliance.CandidateRenderer()
  return images, [g[1] for g in generated], mask, renderer


def test_ground_truth_scores_100_percent(data):
  images, scene_list, mask, renderer = data
  result = compliance.compliance(images, scene_list, mask, renderer)
  assert result == {"shape": 1.0, "color": 1.0, "size": 1.0, "all": 1.0}
  predicted = compliance.classify_center(images, scene_list, mask, renderer)
  np.testing.assert_allclose(predicted["distance"], 0.0, atol=1e-6)


def test_wrong_caption_is_detected(data):
  images, scene_list, mask, renderer = data
  # Draw scene 0 with another colour: the classifier must see the new colour.
  center = scene_list[0]["objects"][0]
  other = next(c for c in scenes.COLORS if c != center["color"])
  swapped = scenes.with_center(scene_list[0], center["shape"], other, center["size"])
  image = scenes.render(swapped)[None].astype(np.float32) / 127.5 - 1.0
  hits = compliance.correct(image, scene_list[:1], mask[:1], renderer)
  assert hits["shape"][0] and hits["size"][0] and not hits["color"][0] and not hits["all"][0]


def test_grey_fill_is_near_chance(data):
  images, scene_list, mask, renderer = data
  grey = images * (1.0 - mask)  # 0 = mid grey in the hole.
  result = compliance.compliance(grey, scene_list, mask, renderer)
  truth = compliance.true_attributes(scene_list)
  # A uniform grey hole is nearest to the same candidate whatever the scene, so each
  # accuracy is that class's frequency: never above the most frequent class's.
  predicted = compliance.classify_center(grey, scene_list, mask, renderer)
  assert all(len(set(predicted[name])) == 1 for name in compliance.ATTRIBUTES)
  for name in compliance.ATTRIBUTES:
    assert result[name] <= np.bincount(truth[name]).max() / NUM_SCENES
  assert result["all"] <= min(result[name] for name in compliance.ATTRIBUTES)


def test_chance_levels():
  levels = compliance.chance_levels()
  assert levels["shape"] == pytest.approx(1 / len(scenes.SHAPES))
  assert levels["color"] == pytest.approx(1 / len(scenes.COLORS))
  assert levels["size"] == pytest.approx(0.5)
  assert levels["all"] == pytest.approx(levels["shape"] * levels["color"] * levels["size"])
