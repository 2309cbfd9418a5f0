"""The family contract and the run layout.

- A new family is one file plus a config: a test-only family with an extra batch field
  trains, evaluates and samples through the unchanged trainer, `evaluate` and `inpaint`.
- Inference imports neither the trainer, grain nor data_prep.
- A corrupt latest checkpoint is moved aside in one line and the run resumes from the
  previous one; a changed model field is refused in one line; evaluate and inpaint give
  the same one-line errors.
"""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import common, smoke
from configs import l2 as l2_config
from inpainting import evaluate, inference, inpaint, run, train
from inpainting.errors import UserError
from tests import two_caption_family


def _env():
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")


def test_inference_imports_neither_trainer_nor_grain_nor_data_prep(repo_root):
  code = (
    "import sys, inpainting.inference, inpainting.inpaint; "
    "bad = [m for m in sys.modules if m == 'grain' or m.startswith('grain.') "
    "or m == 'inpainting.train' or m == 'inpainting.input_pipeline' or m.startswith('data_prep')]; "
    "print('BAD', bad)"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=repo_root, env=_env(), capture_output=True, text=True
  )
  assert out.returncode == 0, out.stderr
  assert "BAD []" in out.stdout, out.stdout


def test_inpainting_package_never_imports_data_prep(repo_root):
  offenders = []
  for folder, _, files in os.walk(os.path.join(repo_root, "inpainting")):
    for name in files:
      if name.endswith(".py"):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
          for line in f:
            if line.strip().startswith(("from data_prep", "import data_prep")):
              offenders.append(os.path.join(folder, name))
  assert offenders == []


# --- A test-only family through the unchanged trainer, evaluate and inpaint ------------------


def two_caption_config(data_dir):
  config = l2_config.get_config()
  config.model.name = two_caption_family.NAME
  config.model.text = common.text_encoder("tiny")
  config.model.widths = (8, 16, 16)
  config.model.attention_resolutions = (8,)
  config.model.attention_heads = 2
  config.optim.warmup_steps = 0
  config.optim.learning_rate = 3e-3
  config.data.dir = data_dir
  config.global_batch_size = 8
  config.num_train_steps = 8
  config.log_every_steps = 4
  config.eval_every_steps = 8
  config.checkpoint_every_steps = 8
  config.num_eval_batches = 1
  config.num_grid_examples = 2
  config.num_grid_samples = 2
  return config


def test_a_family_with_an_extra_batch_field_trains_evaluates_and_samples(tmp_path, data_dir):
  workdir = str(tmp_path / "two")
  metrics = train.train_and_evaluate(two_caption_config(data_dir), workdir)
  assert np.isfinite(metrics["loss"]) and "eval/psnr_hole" in metrics
  assert os.listdir(os.path.join(workdir, "samples"))

  # The sampler reads the extra field: a different second caption changes the samples.
  trained = inference.load_run(workdir)
  batch = next(evaluate.batches(data_dir, "validation", trained, "first", 4, 4))
  assert "tokens2" in batch and (batch["tokens2"] != batch["tokens"]).any()
  first = trained.sample(batch, 1, seed=0)
  swapped = dict(batch, tokens2=batch["tokens2"][::-1], token_mask2=batch["token_mask2"][::-1])
  assert np.abs(trained.sample(swapped, 1, seed=0) - first).max() > 1e-5

  report = evaluate.run_evaluation(
    workdir, num_samples=2, max_examples=8, batch_size=4, fid="off", curve_examples=4
  )
  assert report["metrics"][two_caption_family.NAME]["true"]["psnr_hole"]["mean"] > 0

  photo = str(tmp_path / "photo.png")
  Image.fromarray(np.full((80, 100, 3), 200, np.uint8)).save(photo)
  _, one, samples = inpaint.inpaint(workdir, photo, "a small red star", num_samples=2)
  assert one["tokens2"].shape == one["tokens"].shape and samples.shape == (2, 1, 64, 64, 3)


# --- Runs that survive their own files going bad ---------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_dir):
  """A 20-step vaegan smoke run with checkpoints at steps 10 and 20."""
  workdir = str(tmp_path_factory.mktemp("run"))
  config = smoke.get_config()
  config.data.dir = data_dir
  config.eval_every_steps = 100  # Never: this run is only read back.
  config.mesh.num_devices = 1
  train.train_and_evaluate(config, workdir)
  return workdir


def _copy(run_dir, tmp_path):
  target = str(tmp_path / "copy")
  shutil.copytree(run_dir, target)
  return target


def _truncate_largest_array_file(workdir, step):
  folder = os.path.join(workdir, "checkpoints", str(step), "state")
  files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
  largest = max((f for f in files if f"{os.sep}d{os.sep}" in f), key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(100)


def _main(workdir, *flags, repo_root):
  return subprocess.run(
    [
      sys.executable,
      "-m",
      "inpainting.main",
      "--config=configs/smoke.py",
      f"--workdir={workdir}",
      "--config.mesh.num_devices=1",
      "--config.eval_every_steps=100",
      *flags,
    ],
    cwd=repo_root,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_corrupt_latest_checkpoint_is_moved_aside_and_the_run_resumes(
  tmp_path, smoke_run, repo_root
):
  workdir = _copy(smoke_run, tmp_path)
  _truncate_largest_array_file(workdir, 20)
  result = _main(workdir, "--config.num_train_steps=22", repo_root=repo_root)
  out = result.stdout + result.stderr
  assert result.returncode == 0, out
  assert "Traceback" not in out
  lines = [line for line in out.splitlines() if "step 20 is unreadable" in line]
  assert len(lines) == 1 and "moved to corrupt_checkpoints/" in lines[0], out
  assert "resumed from step 10" in out
  moved = os.listdir(os.path.join(workdir, run.CORRUPT_DIR))
  assert len(moved) == 1 and moved[0].startswith("step_20_")
  assert inference.checkpoint_steps(workdir) == [10, 20, 22]  # 20 written anew.


def test_inference_skips_a_corrupt_latest_checkpoint_and_refuses_it_by_name(
  tmp_path, smoke_run, capsys
):
  workdir = _copy(smoke_run, tmp_path)
  _truncate_largest_array_file(workdir, 20)
  assert inference.load_run(workdir).step == 10
  assert "step 20 is unreadable" in capsys.readouterr().out
  assert inference.checkpoint_steps(workdir) == [10, 20]  # Read-only: nothing moved.
  with pytest.raises(UserError, match="checkpoint step 20 .* is unreadable"):
    inference.load_run(workdir, step=20)


def test_a_changed_model_field_is_refused_in_one_line(tmp_path, smoke_run, data_dir, repo_root):
  workdir = _copy(smoke_run, tmp_path)
  config = smoke.get_config()
  config.data.dir = data_dir
  config.model.z_dim = 4
  config.num_train_steps = 30  # May change on resume: not named.
  with pytest.raises(UserError, match=r"different config: model\.z_dim \(8 -> 4\);"):
    train.train_and_evaluate(config, workdir)
  # The exit-code contract, once, through the entry point.
  result = _main(workdir, "--config.model.z_dim=4", repo_root=repo_root)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "model.z_dim" in result.stderr


def test_evaluate_and_inpaint_refuse_a_checkpoint_that_does_not_match_config(tmp_path, smoke_run):
  workdir = _copy(smoke_run, tmp_path)
  config = run.load_config(workdir)
  config.model.z_dim = 4
  with open(os.path.join(workdir, run.CONFIG_FILE), "w", encoding="utf-8") as f:
    f.write(config.to_json())
  with pytest.raises(UserError, match="does not match the run's config.json"):
    evaluate.run_evaluation(workdir, max_examples=4, batch_size=4, fid="off")
  photo = str(tmp_path / "photo.png")
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photo)
  with pytest.raises(UserError, match="does not match the run's config.json"):
    inpaint.inpaint(workdir, photo, "a red star")


def test_learning_rate_metric_is_the_rate_of_the_step_just_taken():
  """Read from optax.inject_hyperparams: warm-up 0, peak/4, 2 peak/4 at steps 0, 1, 2."""
  from flax import nnx  # noqa: PLC0415

  from tests.test_models import l2_tiny_config, make_batch  # noqa: PLC0415

  config = l2_tiny_config()
  config.optim.warmup_steps = 4
  family = inference.registry.get("l2")
  hp = family.hparams(config)
  bundle = family.create(config, nnx.Rngs(0))
  graphdef, state = nnx.split(bundle)

  @jax.jit
  def step(state, batch):
    bundle = nnx.merge(graphdef, state)
    metrics = family.train_step(bundle, batch, jax.random.key(0), hp)
    return nnx.state(bundle), metrics["learning_rate"]

  rates = []
  for _ in range(3):
    state, rate = step(state, make_batch())
    rates.append(float(rate))
  np.testing.assert_allclose(rates, [0.0, 0.5e-4, 1e-4], rtol=1e-6, atol=1e-12)


def test_a_bad_config_fails_before_any_data_is_prepared(tmp_path, repo_root):
  workdir = tmp_path / "run"
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "inpainting.main",
      "--config=configs/smoke.py",
      f"--workdir={workdir}",
      "--config.model.dtype=float8",
    ],
    cwd=repo_root,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: model.dtype")
  assert not (workdir / "data").exists()


def test_a_knob_added_after_the_run_is_accepted_only_at_its_off_value():
  saved = smoke.get_config()
  del saved.loss.r1_weight  # A run written before the knob existed.
  same = smoke.get_config()
  assert run.differing_fields(saved, same) == []
  same.loss.r1_weight = 1.0
  assert run.differing_fields(saved, same) == ["loss.r1_weight"]
  # A knob whose off value is a word: read at its listed default.
  del saved.data.text_source
  assert run.differing_fields(saved, smoke.get_config()) == []
  same = smoke.get_config()
  same.data.text_source = "dialogue"
  assert run.differing_fields(saved, same) == ["data.text_source"]
