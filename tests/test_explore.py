"""inpainting.explore: every mode on smoke checkpoints (sketches and synthetic scenes), the
family hooks it calls, and its measurements on inputs whose answers are known."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from configs import sketch
from data_prep.prepare import prepare
from inpainting import batching, explore, images, inference, masks, scenes, train
from inpainting.errors import UserError
from inpainting.metrics import sketch_classifier
from tests.test_sketch_classifier import make_shapes


def _env():
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def sketch_run(tmp_path_factory):
  """(workdir, classifier path, data dir): configs/sketch.py:runlocal on three shapes."""
  root = tmp_path_factory.mktemp("sketch")
  make_shapes(str(root / "in"))
  data_dir = str(root / "data")
  prepare("quickdraw", str(root / "in"), data_dir, progress=False)
  config = sketch.get_config("center,runlocal")
  config.data.dir = data_dir
  config.mesh.num_devices = 1
  workdir = str(root / "run")
  train.train_and_evaluate(config, workdir)
  classifier = sketch_classifier.train(data_dir, steps=60, batch_size=32)
  path = str(root / "classifier.npz")
  sketch_classifier.save(path, classifier)
  return workdir, path, data_dir


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, data_dir, smoke_config):
  workdir = str(tmp_path_factory.mktemp("synthetic"))
  config = smoke_config(**{"data.dir": data_dir, "mesh.num_devices": 1, "eval_every_steps": 100})
  train.train_and_evaluate(config, workdir)
  return workdir


# --- the three modes on a sketch model ----------------------------------------------------------


def test_sample_mode_scores_samples_next_to_real_drawings(sketch_run):
  workdir, classifier, _ = sketch_run
  rows, figures = explore.explore("sample", workdir, num=10, classifier_path=classifier)
  assert [len(tiles) for _, tiles in rows] == [8, 2]
  assert sum(figures["predicted_classes"].values()) == 10
  assert 0.0 <= figures["recognisable_rate"] <= 1.0
  # The real-drawing figures are the classifier's own held-out figures: the same data.
  meta = sketch_classifier.load(classifier).meta["validation"]
  assert figures["real"] == {k: meta[k] for k in ("count", "accuracy", "recognisable_rate")}
  # A class's caption is recognised as that class's.
  _, figures = explore.explore(
    "sample", workdir, num=4, caption="a drawing of a cross", classifier_path=classifier
  )
  assert figures["caption_class"] == "cross" and 0 <= figures["caption_class_rate"] <= 1


def test_interpolate_mode_paths_end_at_the_samples_they_join(sketch_run):
  workdir, classifier, _ = sketch_run
  rows, figures = explore.explore(
    "interpolate",
    workdir,
    class_a="circle",
    class_b="cross,ladder",
    num=2,
    steps=5,
    classifier_path=classifier,
  )
  assert len(rows) == 2 * 2 * 2 and all(len(tiles) == 1 + 5 for _, tiles in rows)
  assert figures["caption_path"]["paths"] == 4
  assert 0 <= figures["caption_path"]["monotone_rate"] <= 1
  # The z path's ends are the two prior samples; the caption path's ends are the samples
  # under caption A and under caption B with the same noise.
  run = inference.load_run(workdir)
  data = explore.Data(run.config.data.dir, "validation")
  pixels = np.stack([e.image for e in data.of_class("circle", 2)])  # the same two examples
  hole = masks.make_batch("center", 2)
  under = {
    word: explore.make_batch(run, pixels, hole, [data.caption_of(word)] * 2)
    for word in ("circle", "cross")
  }
  two = run.sample(under["circle"], 2, seed=0)
  z_row, caption_row = rows[0][1][1:], rows[1][1][1:]
  np.testing.assert_allclose(z_row[0], two[0, 0], atol=1e-5)
  np.testing.assert_allclose(z_row[-1], two[1, 0], atol=1e-5)
  np.testing.assert_allclose(caption_row[0], run.sample(under["circle"], 1, 0)[0, 0], atol=1e-4)
  np.testing.assert_allclose(caption_row[-1], run.sample(under["cross"], 1, 0)[0, 0], atol=1e-4)


def test_switch_mode_keeps_the_border_and_measures_every_method(sketch_run):
  workdir, classifier, _ = sketch_run
  rows, figures = explore.explore(
    "switch",
    workdir,
    class_a="circle",
    class_b="all",
    num=2,
    samples=3,
    mask="box:8,8,24,40",
    classifier_path=classifier,
  )
  assert list(figures["pairs"]) == ["circle->cross", "circle->ladder"]
  assert len(rows) == 4 and all(len(tiles) == 2 + 3 + 3 for _, tiles in rows)
  overall = figures["overall"]
  for method in ("prior", "posterior_partial", "posterior_completed"):
    assert overall[f"border_exact_{method}"] == 1.0
    assert 0 <= overall[f"switch_success_{method}"] <= 1
  original, erased = rows[0][1][0], rows[0][1][1]
  hole = masks.make("box:8,8,24,40")
  for tile in rows[0][1][2:]:
    kept = images.to_uint8(tile)[hole[..., 0] == 0]
    np.testing.assert_array_equal(kept, images.to_uint8(original)[hole[..., 0] == 0])
  assert (erased[hole[..., 0] == 1] == 0).all()


def test_the_new_hooks_agree_with_sample(sketch_run):
  """complete_from_z is deterministic in z and depends on it; the posterior of a drawing
  under two captions differs (it reads the caption)."""
  workdir, _, _ = sketch_run
  run = inference.load_run(workdir)
  data = explore.Data(run.config.data.dir, "validation")
  example = data.of_class("ladder", 1)[0]
  hole = masks.make_batch("center", 1)
  batch = explore.make_batch(run, example.image[None], hole, [data.caption_of("ladder")])
  z = explore.call_hook(run, "encode_posterior", batch, 0)
  assert z.shape == (1, run.config.model.z_dim)
  other = explore.make_batch(run, example.image[None], hole, [data.caption_of("circle")])
  assert np.abs(explore.call_hook(run, "encode_posterior", other, 0) - z).max() > 0
  zs = np.stack([z, z, z + 3.0])  # [3, 1, z_dim]
  done = explore.call_hook(run, "complete_from_z", batch, 0, {"z": zs})
  assert done.shape == (3, 1, 64, 64, 3)
  np.testing.assert_array_equal(done[0], done[1])
  assert np.abs(done[2] - done[0]).max() > 1e-4


# --- measurements on inputs whose answers are known ----------------------------------------------


class InkInTheMiddle:
  """A stand-in classifier: class "b" when the centre pixel is dark, else "a"."""

  classes = ["a", "b"]

  def index(self, word):
    return self.classes.index(word)

  def probabilities(self, pictures):
    dark = np.asarray(pictures)[..., 32, 32, 0] < 0
    return np.stack([~dark, dark, np.zeros_like(dark)], -1).astype(np.float32)


def test_switch_success_needs_class_b_and_the_exact_border():
  pixels = np.full((3, 64, 64, 3), 255, np.uint8)
  pixels[:, 2, :] = 0  # A's drawing: a line in the border.
  mask = masks.make_batch("center", 3)
  done = images.to_float(pixels).copy()
  done[0, 30:34, 30:34] = -1.0  # B in the hole, border kept: a success.
  done[1, 30:34, 30:34] = -1.0
  done[1, 2, 5] = 1.0  # B in the hole, but a border pixel changed: not a success.
  data = SimpleNamespace(labelled=True, scenes=False)
  figures = explore._switch_figures(
    data,
    InkInTheMiddle(),
    {"prior": done[None]},
    images.to_float(pixels)[None],
    pixels,
    mask,
    [None] * 3,
    [None] * 3,
    "a",
    "b",
    pixels,
  )
  assert figures["switch_success_prior"] == pytest.approx(1 / 3)
  assert figures["border_exact_prior"] == pytest.approx(2 / 3)
  assert figures["stayed_a_prior"] == pytest.approx(1 / 3)
  assert figures["control_classified_a"] == 1.0 and figures["erased_classified_b"] == 0.0


def test_on_synthetic_scenes_the_exact_matcher_scores_the_switch(synthetic_run):
  data = explore.Data(inference.load_run(synthetic_run).config.data.dir, "validation")
  chosen = data.examples[:3]
  donors = chosen[1:] + chosen[:1]
  mask = masks.make_batch("center", 3)
  pixels = np.stack([e.image for e in chosen])
  # Each scene redrawn with its donor's centre object, composited into A's border.
  switched = np.stack(
    [
      scenes.render(
        scenes.with_center(e.scene, *(d.scene["objects"][0][k] for k in ("shape", "color", "size")))
      )
      for e, d in zip(chosen, donors)
    ]
  )
  switched = np.where(mask > 0.5, switched, pixels)
  methods = {
    "prior": images.to_float(switched)[None],
    "posterior_partial": images.to_float(pixels)[None],
  }
  data = SimpleNamespace(labelled=False, scenes=True)
  figures = explore._switch_figures(
    data,
    None,
    methods,
    images.to_float(pixels)[None],
    pixels,
    mask,
    chosen,
    donors,
    None,
    None,
    pixels,
  )
  assert figures["switch_success_prior"] == 1.0 and figures["stayed_a_prior"] == 0.0
  assert figures["switch_success_posterior_partial"] == 0.0
  assert figures["stayed_a_posterior_partial"] == 1.0 and figures["control_compliance"] == 1.0

  # And the whole mode on a synthetic smoke checkpoint, with donor captions.
  rows, figures = explore.explore("switch", synthetic_run, num=3, samples=2)
  assert list(figures["pairs"]) == ["donor captions"] and len(rows) == 3
  assert figures["overall"]["border_exact_prior"] == 1.0
  assert 0 <= figures["overall"]["switch_success_prior"] <= 1


def test_monotonicity_of_paths():
  found = explore.monotonicity(np.array([[0.0, 0.2, 0.19, 1.0], [0.0, 0.6, 0.4, 1.0]]))
  assert found["monotone_rate"] == 0.5  # a step back of 0.01 is within the tolerance
  assert found["excess_variation"] == pytest.approx((0.02 + 0.4) / 2)
  found = explore.monotonicity(np.array([[0.0, 0.2, 0.5, 1.0], [0.0, 0.6, 0.4, 1.0]]))
  assert found["excess_variation"] == pytest.approx(0.2)  # (1.4 - 1.0) / 2 paths
  assert found["start_mean"] == 0.0 and found["end_mean"] == 1.0


# --- the command, errors and imports -----------------------------------------------------------------


def test_the_command_writes_the_grid_and_the_figures(sketch_run, tmp_path, repo_root):
  workdir, classifier, _ = sketch_run
  out, metrics = str(tmp_path / "grid.png"), str(tmp_path / "m.json")
  command = [sys.executable, "-m", "inpainting.explore", "switch", f"--workdir={workdir}"]
  done = subprocess.run(
    [
      *command,
      "--class_a=cross",
      "--class_b=circle",
      f"--classifier={classifier}",
      "--num=2",
      "--samples=2",
      f"--out={out}",
      f"--metrics_out={metrics}",
    ],
    cwd=repo_root,
    env=_env(),
    capture_output=True,
    text=True,
  )
  assert done.returncode == 0, done.stderr
  printed = json.loads(done.stdout.strip().splitlines()[-1])
  with open(metrics, encoding="utf-8") as f:
    assert json.load(f) == printed
  assert "switch_success_prior" in printed["pairs"]["cross->circle"]
  picture = np.asarray(Image.open(out))
  assert picture.shape == (2 * 66 + 2, explore.LABEL_WIDTH + 7 * 66 + 2, 3)
  for bad, message in [
    (["warp", f"--workdir={workdir}"], "unknown mode"),
    (["switch", f"--workdir={workdir}", "--class_a=dog"], "no class 'dog'"),
  ]:
    done = subprocess.run(
      [sys.executable, "-m", "inpainting.explore", *bad, f"--out={out}"],
      cwd=repo_root,
      env=_env(),
      capture_output=True,
      text=True,
    )
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_family_without_the_hook_is_a_one_line_error():
  run = SimpleNamespace(
    family=SimpleNamespace(encode_posterior=None),
    config=SimpleNamespace(model=SimpleNamespace(name="l2")),
  )
  with pytest.raises(UserError, match="no latent z .* no encode_posterior"):
    explore.call_hook(run, "encode_posterior", {}, 0)


def test_explore_imports_neither_the_trainer_nor_grain(repo_root):
  code = (
    "import sys, inpainting.explore, inpainting.metrics.sketch_classifier; "
    "bad = [m for m in sys.modules if m == 'grain' or m.startswith('grain.') "
    "or m in ('inpainting.train', 'inpainting.input_pipeline') or m.startswith('data_prep')]; "
    "print('BAD', bad)"
  )
  done = subprocess.run(
    [sys.executable, "-c", code], cwd=repo_root, env=_env(), capture_output=True, text=True
  )
  assert done.returncode == 0 and "BAD []" in done.stdout, done.stderr


def test_second_caption_is_tokenised_with_its_conversation_parts(synthetic_run):
  run = inference.load_run(synthetic_run)
  assert "segments" in run.family.batch.device_keys
  pixels = np.zeros((2, 64, 64, 3), np.uint8)
  mask = np.asarray(masks.make_batch(masks.parse("center"), 2, 64, 64), np.float32)
  texts = [batching.PART_BREAK.join(["a red star", "what colour red"])] * 2
  batch = explore.make_batch(run, pixels, mask, ["a blue circle"] * 2, captions_b=texts)
  as_first = explore.make_batch(run, pixels, mask, texts)
  np.testing.assert_array_equal(batch["tokens_b"], as_first["tokens"])
  np.testing.assert_array_equal(batch["segments_b"], as_first["segments"])
  assert batch["segments_b"].max() == 1  # The turn's tokens are part 1, not part 0.
