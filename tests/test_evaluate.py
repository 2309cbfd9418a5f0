"""The evaluate and inpaint commands on a smoke-trained run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from inpainting import evaluate, inpaint, train
from tests.test_train import smoke_config


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("smoke_run"))
  config = smoke_config(**{"num_train_steps": 6, "checkpoint_every_steps": 3})
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture
def photo(tmp_path):
  path = tmp_path / "photo.jpg"
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(path)
  return str(path)


def test_evaluate_writes_metrics_and_report(smoke_run):
  report = evaluate.run_evaluation(
    smoke_run, num_samples=2, max_examples=16, batch_size=8, fid="off", curve_examples=8
  )
  out_dir = os.path.join(smoke_run, "eval", "validation")
  with open(os.path.join(out_dir, "metrics.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert saved["checkpoint_step"] == report["checkpoint_step"] == 6
  assert saved["num_examples"] == 16
  methods = saved["metrics"]
  assert {"vaegan", "baseline_mean_fill", "baseline_harmonic_fill"} <= set(methods)
  assert set(methods["vaegan"]) == {"true", "shuffled", "empty"}
  true = methods["vaegan"]["true"]
  for name in ("psnr_hole", "ssim_hole", "l1_hole", "lpips", "diversity_lpips", "compliance_all"):
    interval = true[name]
    assert interval["low"] <= interval["mean"] <= interval["high"], name
  # Best-of-K can only be at least as good as the first sample.
  assert true["psnr_hole_best_of_k"]["mean"] >= true["psnr_hole"]["mean"]
  assert true["lpips_best_of_k"]["mean"] <= true["lpips"]["mean"]
  effects = saved["caption_effect"]["vaegan"]
  assert "true_minus_shuffled/psnr_hole" in effects and "true_minus_empty/compliance_all" in effects
  assert saved["chance"]["shape"] == pytest.approx(1 / 6)
  assert [p["step"] for p in saved["metric_vs_step"]] == [3, 6]
  with open(os.path.join(out_dir, "report.md"), encoding="utf-8") as f:
    text = f.read()
  assert "| baseline_harmonic_fill |" in text and "How much does the caption help?" in text
  for png in ("samples.png", "caption_effect.png", "metric_vs_step.png"):
    assert Image.open(os.path.join(out_dir, png)).size[0] > 50, png


def test_inpaint_writes_a_grid(smoke_run, photo, tmp_path):
  image, samples = inpaint.inpaint(smoke_run, photo, "a small red star", num_samples=3)
  assert image.shape == (64, 64, 3) and samples.shape == (3, 64, 64, 3)
  # The border is the input's; only the hole is generated.
  border = np.ones((64, 64), bool)
  border[16:48, 16:48] = False
  np.testing.assert_allclose(
    samples[:, border], np.broadcast_to(image[border], (3, *image[border].shape)), atol=1e-6
  )

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
