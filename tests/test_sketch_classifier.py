"""The sketch classifier: trains on a tiny fixture of three shapes, saves and loads safely."""

import json
import os

import numpy as np
import pytest

from data_prep.prepare import prepare
from inpainting import images
from inpainting.errors import UserError
from inpainting.metrics import sketch_classifier


def shape(word, rng):
  """A QuickDraw drawing of one of three easily told shapes, with jitter."""
  j = lambda n: rng.normal(0, 6, n)  # noqa: E731
  if word == "circle":
    t = np.linspace(0, 2 * np.pi, 20)
    xs, ys = 128 + 100 * np.cos(t) + j(20), 128 + 100 * np.sin(t) + j(20)
    strokes = [[xs, ys]]
  elif word == "cross":
    strokes = [[[20, 235] + j(2), [20, 235] + j(2)], [[20, 235] + j(2), [235, 20] + j(2)]]
  else:  # ladder: two rails and rungs
    strokes = [[[60, 60] + j(2), [10, 245] + j(2)], [[190, 190] + j(2), [10, 245] + j(2)]]
    strokes += [[[60, 190] + j(2), [y, y] + j(2)] for y in (40, 100, 160, 220)]
  return [[np.clip(np.round(c), 0, 255).astype(int).tolist() for c in s] for s in strokes]


WORDS = ("circle", "cross", "ladder")


def make_shapes(root, per_class=15):
  rng = np.random.default_rng(0)
  os.makedirs(root)
  for word in WORDS:
    with open(os.path.join(root, f"{word}.ndjson"), "w", encoding="utf-8") as f:
      for i in range(per_class):
        entry = {"word": word, "key_id": f"{word}{i}", "drawing": shape(word, rng)}
        f.write(json.dumps(entry) + "\n")


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("shapes")
  make_shapes(str(root / "in"))
  prepare("quickdraw", str(root / "in"), str(root / "data"), progress=False)
  return str(root / "data")


@pytest.fixture(scope="module")
def trained(shapes_dir):
  return sketch_classifier.train(shapes_dir, steps=150, batch_size=32, seed=0)


def test_it_learns_the_shapes_and_rejects_non_drawings(trained):
  validation = trained.meta["validation"]
  assert trained.classes == sorted(WORDS)
  assert validation["count"] == 9  # 3 of 15 per class held out
  assert validation["accuracy"] >= 8 / 9, validation
  assert validation["recognisable_rate"] >= 8 / 9
  assert validation["negatives_recognisable_rate"] <= 0.1
  # Blank paper is not a drawing of any class.
  blank = np.ones((2, 64, 64, 3), np.float32)
  probs = trained.probabilities(blank)
  assert probs.shape == (2, 4) and np.allclose(probs.sum(-1), 1, atol=1e-5)
  assert not sketch_classifier.recognisable(probs).any()


def test_an_untrained_classifier_does_not_pass_the_same_bar(shapes_dir):
  untrained = sketch_classifier.train(shapes_dir, steps=1, batch_size=32, seed=0)
  assert untrained.meta["validation"]["accuracy"] < 8 / 9


def test_save_and_load_give_the_same_probabilities(trained, shapes_dir, tmp_path):
  path = str(tmp_path / "classifier.npz")
  sketch_classifier.save(path, trained)
  loaded = sketch_classifier.load(path)
  assert loaded.classes == trained.classes and loaded.meta == trained.meta
  examples = sketch_classifier.read_examples(shapes_dir, "validation")
  pixels = images.to_float(np.stack([e.image for e in examples]))
  np.testing.assert_allclose(loaded.probabilities(pixels), trained.probabilities(pixels), atol=1e-6)
  # Any leading shape: [K, B, 64, 64, 3] -> [K, B, C + 1].
  assert loaded.probabilities(pixels[None].repeat(2, 0)).shape == (2, len(examples), 4)
  # Files that are not classifiers are refused in one line; pickles are never loaded.
  bad = str(tmp_path / "bad.npz")
  np.savez(bad, meta=np.array([{"format": sketch_classifier.FORMAT}], dtype=object))
  with pytest.raises(UserError, match="not a sketch classifier"):
    sketch_classifier.load(bad)
  with pytest.raises(UserError, match="no classifier file"):
    sketch_classifier.load(str(tmp_path / "missing.npz"))


def test_one_class_or_unlabelled_data_is_refused(tmp_path, data_dir):
  with pytest.raises(UserError, match="at least two classes"):
    sketch_classifier.train(data_dir, steps=1)  # synthetic scenes carry no labels
