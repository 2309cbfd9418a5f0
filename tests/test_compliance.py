"""Caption compliance: the renderer's images score 100%, a grey fill about chance."""

import numpy as np
import pytest

from inpainting import images as images_lib
from inpainting import scenes
from inpainting.metrics import compliance

NUM_SCENES = 16


@pytest.fixture(scope="module")
def data():
  generated = [scenes.generate(7, i) for i in range(NUM_SCENES)]
  # The project's one uint8 -> [-1, 1] conversion, as the candidates get: distances are 0.
  images = images_lib.to_float(np.stack([g[0] for g in generated]))
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
  image = images_lib.to_float(scenes.render(swapped)[None])
  hits = compliance.correct(image, scene_list[:1], mask[:1], renderer)
  assert hits["shape"][0] and hits["size"][0] and not hits["color"][0] and not hits["all"][0]


def _with_donor_centres(scene_list, shifts, keep=0):
  """Renders scene i with the centre attributes of scene (i + shifts[name]) % n.

  The first `keep` scenes stay as they are. Returns the [-1, 1] images and, per attribute,
  which renders still show the scene's own value (compared as strings, independently of
  the module under test).
  """
  n = len(scene_list)
  rendered, same = [], {name: [] for name in compliance.ATTRIBUTES}
  for i, scene in enumerate(scene_list):
    own = scene["objects"][0]
    donated = {
      name: own[name] if i < keep else scene_list[(i + shift) % n]["objects"][0][name]
      for name, shift in shifts.items()
    }
    for name in compliance.ATTRIBUTES:
      same[name].append(donated[name] == own[name])
    rendered.append(scenes.render(scenes.with_center(scene, **donated)))
  return images_lib.to_float(np.stack(rendered)), {name: np.array(v) for name, v in same.items()}


# Donor shifts chosen so that, on these 16 scenes, some but not all donors share the value.
@pytest.mark.parametrize("swapped, shift", [("shape", 2), ("color", 3), ("size", 5)])
def test_another_scenes_centre_scores_the_exact_agreement_rate(data, swapped, shift):
  images, scene_list, mask, renderer = data
  shifts = {name: 0 for name in compliance.ATTRIBUTES}
  shifts[swapped] = shift
  rendered, same = _with_donor_centres(scene_list, shifts)
  k = int(same[swapped].sum())
  assert 0 < k < NUM_SCENES  # The fixture discriminates: some hits, some misses.
  hits = compliance.correct(rendered, scene_list, mask, renderer)
  np.testing.assert_array_equal(hits[swapped], same[swapped])
  np.testing.assert_array_equal(hits["all"], same[swapped])
  result = compliance.compliance(rendered, scene_list, mask, renderer)
  expected = {name: 1.0 for name in compliance.ATTRIBUTES}
  expected[swapped] = expected["all"] = k / NUM_SCENES
  assert result == expected
  # Each render is exactly one of the candidates.
  predicted = compliance.classify_center(rendered, scene_list, mask, renderer)
  np.testing.assert_array_equal(predicted["distance"], 0.0)


def test_all_three_swapped_at_once(data):
  images, scene_list, mask, renderer = data
  keep = 4  # Scenes 0-3 unchanged: "all" is right for those (and only for those here).
  shifts = {"shape": 2, "color": 3, "size": 5}
  rendered, same = _with_donor_centres(scene_list, shifts, keep=keep)
  all_same = same["shape"] & same["color"] & same["size"]
  assert all_same.sum() == keep
  for name in compliance.ATTRIBUTES:
    assert keep < same[name].sum() < NUM_SCENES
  hits = compliance.correct(rendered, scene_list, mask, renderer)
  for name in compliance.ATTRIBUTES:
    np.testing.assert_array_equal(hits[name], same[name], err_msg=name)
  np.testing.assert_array_equal(hits["all"], all_same)
  result = compliance.compliance(rendered, scene_list, mask, renderer)
  assert result == {
    **{name: same[name].sum() / NUM_SCENES for name in compliance.ATTRIBUTES},
    "all": keep / NUM_SCENES,
  }


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


# --- Pose search, validity, coverage and the given caption ----------------------------------


def _class_of(obj):
  return (obj["shape"], obj["color"], obj["size"])


def _render_classes(scene_list, classes, rng):
  """Scene i drawn with centre class classes[i] at a fresh rotation and jitter, [-1, 1]."""
  rendered = [
    scenes.render(scenes.with_center(compliance.reposed(scene, rng), *klass))
    for scene, klass in zip(scene_list, classes)
  ]
  return images_lib.to_float(np.stack(rendered))


def test_reposed_renders_are_found_in_any_pose(data):
  """A perfect model cannot know the hidden pose: its renders in another pose, of the
  scene's class or of any other, are classified as that class and are valid objects."""
  _, scene_list, mask, renderer = data
  rng = np.random.default_rng(11)
  own = _render_classes(scene_list, [_class_of(s["objects"][0]) for s in scene_list], rng)
  assert compliance.compliance(own, scene_list, mask, renderer)["all"] == 1.0
  classes = [
    (scenes.SHAPES[i % 6], list(scenes.COLORS)[(3 * i) % 10], scenes.SIZES[(i // 3) % 2])
    for i in range(NUM_SCENES)
  ]
  other = _render_classes(scene_list, classes, rng)
  predicted = compliance.classify_center(other, scene_list, mask, renderer)
  found = [
    (scenes.SHAPES[a], list(scenes.COLORS)[b], scenes.SIZES[c])
    for a, b, c in zip(predicted["shape"], predicted["color"], predicted["size"])
  ]
  assert found == classes
  assert predicted["rms"].max() <= compliance.VALID_RMS_THRESHOLD
  assert predicted["rms"].min() > 0  # Not the hidden pose: the search found them.


def test_validity_threshold_separates_renders_from_fills():
  """The calibration of VALID_RMS_THRESHOLD, redone on 24 other scenes: re-posed true
  renders fall under it, fills of mid grey or the border's mean colour and noise far above."""
  found = compliance.pose_calibration(24, seed=31)
  threshold = compliance.VALID_RMS_THRESHOLD
  assert found["reposed"].max() <= threshold
  # Without the hidden film grain (what a perfect model can know): still valid.
  assert found["reposed_without_grain"].max() <= threshold
  assert found["grey"].min() > 3 * threshold
  assert found["border_mean"].min() > 3 * threshold
  assert found["noise"].min() > 10 * threshold


def test_coverage_counts_the_distinct_classes_drawn(data):
  _, scene_list, mask, renderer = data
  rng = np.random.default_rng(5)
  k = 4
  palette = [("star", "red", "large"), ("star", "red", "small"), ("heart", "blue", "large")]
  # Per input, K classes from a small palette, so that repeats happen.
  drawn = [[palette[j] for j in rng.integers(0, len(palette), k)] for _ in scene_list]
  samples = np.stack(
    [_render_classes(scene_list, [d[s] for d in drawn], rng) for s in range(k)]
  )  # [K, B, 64, 64, 3]
  result = compliance.scene_metrics(samples, scene_list, mask, renderer=renderer)
  expected = [len(set(d)) for d in drawn]
  assert len(set(expected)) > 1  # The fixture discriminates.
  np.testing.assert_array_equal(result["coverage_distinct_k"], expected)
  np.testing.assert_array_equal(result["valid_object_rate"], 1.0)
  # One sample per input: no coverage, validity still per sample.
  single = compliance.scene_metrics(samples[:1], scene_list, mask, renderer=renderer)
  assert "coverage_distinct_k" not in single


def test_fills_are_not_valid_objects(data):
  images, scene_list, mask, renderer = data
  rng = np.random.default_rng(2)
  grey = images * (1.0 - mask)
  border_mean = (images * (1 - mask)).sum(axis=(1, 2), keepdims=True) / (1 - mask).sum(
    axis=(1, 2), keepdims=True
  )
  mean_fill = images * (1.0 - mask) + border_mean * mask
  noise = np.where(mask > 0, rng.uniform(-1, 1, images.shape), images).astype(np.float32)
  result = compliance.scene_metrics(
    np.stack([grey, mean_fill, noise]), scene_list, mask, renderer=renderer
  )
  np.testing.assert_array_equal(result["valid_object_rate"], 0.0)
  # The ground truth in the same call: valid.
  truth = compliance.scene_metrics(images[None], scene_list, mask, renderer=renderer)
  np.testing.assert_array_equal(truth["valid_object_rate"], 1.0)


def test_obeys_the_given_caption_not_the_scenes_own(data):
  """Renders of the class named by the caption the model was given (the previous scene's,
  as with shuffled captions) obey it fully; against the scene's own caption they score the
  rate at which the two captions happen to agree."""
  _, scene_list, mask, renderer = data
  rng = np.random.default_rng(8)
  given = scene_list[-1:] + scene_list[:-1]
  samples = _render_classes(scene_list, [_class_of(g["objects"][0]) for g in given], rng)
  result = compliance.scene_metrics(samples[None], scene_list, mask, given, renderer)
  for name in (*compliance.ATTRIBUTES, "all"):
    np.testing.assert_array_equal(result[f"obeys_caption_{name}"], 1.0, err_msg=name)
  for name in compliance.ATTRIBUTES:
    same = [g["objects"][0][name] == s["objects"][0][name] for g, s in zip(given, scene_list)]
    np.testing.assert_array_equal(result[f"compliance_{name}"], same, err_msg=name)
  same_all = [
    _class_of(g["objects"][0]) == _class_of(s["objects"][0]) for g, s in zip(given, scene_list)
  ]
  np.testing.assert_array_equal(result["compliance_all"], same_all)
  assert result["compliance_color"].mean() < 1.0  # Chance-like, not perfect.
  without = compliance.scene_metrics(samples[None], scene_list, mask, renderer=renderer)
  assert not any(k.startswith("obeys_caption") for k in without)


def test_describes_center():
  _, scene, captions = scenes.generate(7, 3)
  assert all(compliance.describes_center(c, scene) for c in captions)
  center = scene["objects"][0]
  other = next(c for c in scenes.COLORS if c != center["color"])
  swapped = scenes.with_center(scene, center["shape"], other, center["size"])
  assert not any(compliance.describes_center(c, swapped) for c in captions)
  phrase = f"A {center['size']}  {center['color']} {center['shape']};"
  assert compliance.describes_center(f"look: {phrase} here", scene)
  other_order = f"a {center['shape']} that is {center['size']} and {center['color']}"
  assert compliance.describes_center(f"{other_order}!", scene)
  held_out_order = f"a {center['shape']} that is {center['color']} and {center['size']}"
  assert not compliance.describes_center(held_out_order, scene)
  assert not compliance.describes_center(f"a very {center['color']} {center['shape']}", scene)


def test_candidate_renders_equal_rendering_each_candidate_scene():
  """The renderer's fast path (one background, 12 coverage maps, 120 blends in the window)
  gives exactly the pixels of rendering every candidate scene."""
  from inpainting import scenes  # noqa: PLC0415
  from inpainting.metrics import compliance  # noqa: PLC0415

  renderer = compliance.CandidateRenderer(capacity=1)
  for index in range(12):
    _, scene, _ = scenes.generate(5, index)
    slow = [scenes.render(scenes.with_center(scene, *name)) for name in renderer._names]
    np.testing.assert_array_equal(renderer(scene), np.stack(slow), err_msg=f"scene {index}")


def _painter(scene_list, told, rng, flip_color=False):
  """K=3 samples per scene that know the told attributes: sample 0 draws the true class
  (with flip_color, another colour), samples 1-2 draw random values for untold ones."""
  choices = {"shape": scenes.SHAPES, "color": tuple(scenes.COLORS), "size": scenes.SIZES}
  rows = []
  for k in range(3):
    classes = []
    for scene, known in zip(scene_list, told):
      center = dict(scene["objects"][0])
      if k > 0:
        for name in compliance.ATTRIBUTES:
          if name not in known:
            center[name] = choices[name][rng.integers(len(choices[name]))]
      elif flip_color:
        center["color"] = next(c for c in choices["color"] if c != center["color"])
      classes.append(_class_of(center))
    rows.append(_render_classes(scene_list, classes, rng))
  return np.stack(rows)


def test_per_turn_metrics_score_a_perfect_painter_1_and_catch_a_colour_flip(data):
  from inpainting import evaluate  # noqa: PLC0415

  _, scene_list, mask, renderer = data
  orders = [
    [turn["reveals"] for turn in scenes.conversation(7, i, scene)[1]]
    for i, scene in enumerate(scene_list)
  ]
  assert any(order[0] == "color" for order in orders)  # The flip below is caught at turn 1.
  modes = [f"turn_{t}" for t in range(4)]

  def per_image(flip_at=None):
    rng = np.random.default_rng(0)
    out, firsts = {}, []
    for t, mode in enumerate(modes):
      told = [set(order[:t]) for order in orders]
      samples = _painter(scene_list, told, rng, flip_color=t == flip_at)
      out[mode] = compliance.scene_metrics(samples, scene_list, mask, None, renderer, told)
      firsts.append(samples[0])
    evaluate._add_background_change(out, modes, firsts, mask)
    return out

  perfect = evaluate._per_turn(per_image(), modes, seed=0)
  assert [e["turn"] for e in perfect] == [0, 1, 2, 3]
  for entry in perfect:
    if entry["turn"] > 0:
      assert entry["compliance_revealed"]["mean"] == 1.0
    if 0 < entry["turn"] < 3:
      assert entry["consistency_to_next"]["mean"] == 1.0
    if entry["turn"] < 3:  # Fresh poses each turn, the background untouched.
      assert entry["background_change_to_next"]["mean"] == 0.0
    if entry["turn"] < 3:
      assert entry["unrevealed_distinct"]["mean"] > 1.0  # Untold attributes vary over K.
  assert perfect[0]["compliance_all"]["mean"] == 1.0  # Sample 0 is the truth throughout.
  assert perfect[1]["color_when_revealed"]["mean"] == 1.0

  flipped = evaluate._per_turn(per_image(flip_at=2), modes, seed=0)
  assert flipped[1]["consistency_to_next"]["mean"] < 1.0  # Right colour at 1, wrong at 2.
  assert flipped[0]["consistency_to_next"] is None  # Nothing told at turn 0.
  assert flipped[2]["compliance_revealed"]["mean"] < 1.0
  assert flipped[2]["color_when_unrevealed"]["mean"] == 0.0  # Always the wrong colour.
  assert "consistency_to_next" not in flipped[3]  # No turn after the last.
  assert "background_change_to_next" not in flipped[3]


def test_background_change_is_zero_for_any_centre_object_and_sees_a_redrawn_background(data):
  _, scene_list, mask, _ = data
  rng = np.random.default_rng(3)
  # Every class, each in a fresh pose at each "turn": the background-only pixels are the
  # scene's background, untouched by any centre object, so they never change.
  all_classes = [
    (shape, color, size)
    for shape in scenes.SHAPES
    for color in scenes.COLORS
    for size in scenes.SIZES
  ]
  turns = [
    _render_classes(
      scene_list, [all_classes[(i * 7 + t * 13) % 120] for i in range(NUM_SCENES)], rng
    )
    for t in range(4)
  ]
  for before, after in zip(turns, turns[1:]):
    assert np.any(before != after)  # Other objects were drawn...
    np.testing.assert_array_equal(compliance.background_change(before, after, mask), 0.0)
  # ...but a painter that brightens its background by 10 levels is seen, by that much.
  shifted = turns[1].copy()
  region = np.zeros((64, 64), bool)
  region[16:48, 16:48] = compliance.background_only_window()
  shifted[:, region] = np.clip(shifted[:, region] + 10 / 127.5, -1, 1)
  change = compliance.background_change(turns[1], shifted, mask)
  assert np.all(change > 5) and np.all(change <= 10 + 1e-6)
  assert compliance.background_only_window().sum() > 50  # The four corners of the hole.
  # A hole with no background-only pixel (a small box in the middle): no figure.
  small = np.zeros_like(mask)
  small[:, 28:36, 28:36] = 1.0
  assert compliance.background_change(turns[0], turns[1], small) is None


def test_an_object_over_the_smooth_background_is_valid_despite_the_hidden_grain():
  """The hole's film grain is hidden: a clean object over the background without it is
  valid, although its distance to the scene's own background (with grain) is not."""
  grainy = []
  for i in range(4):
    _, scene, _ = scenes.generate(11, i)
    scene["background"]["noise"] = 6.0  # The generator's strongest grain.
    grainy.append(scene)
  mask = np.zeros((4, 64, 64, 1), np.float32)
  mask[:, 16:48, 16:48] = 1.0
  truth = images_lib.to_float(np.stack([scenes.render(s) for s in grainy]))
  smooth = images_lib.to_float(
    np.stack([scenes.render(compliance.without_grain(s)) for s in grainy])
  )
  blurred = truth.copy()  # A soft object: the mean of 1-px shifts of the smooth render.
  blurred[:, 16:48, 16:48] = (
    sum(np.roll(smooth, shift, axis) for shift in (-1, 1) for axis in (1, 2))[:, 16:48, 16:48] / 4
  )
  samples = np.stack([truth, smooth, blurred])
  renderer = compliance.CandidateRenderer()
  found = compliance.classify_samples(samples, grainy, mask, renderer)
  assert found["rms"][1].min() > compliance.VALID_RMS_THRESHOLD  # Grain counted: invalid.
  result = compliance.scene_metrics(samples, grainy, mask, renderer=renderer)
  np.testing.assert_array_equal(result["valid_object_rate"], 2 / 3)  # Truth, smooth: valid.
  rms = compliance.validity_rms(samples, grainy, mask, found["rms"], renderer)
  assert rms[2].min() > compliance.VALID_RMS_THRESHOLD  # The soft object stays invalid.
  np.testing.assert_allclose(rms[:2], 0.0, atol=1e-6)
