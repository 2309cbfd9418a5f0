"""The training loop: sharding equivalence, exact resume, SIGTERM, NaN stop, TensorBoard."""

import glob
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from configs import smoke
from inpainting import checkpointing, train
from inpainting.errors import UserError


def smoke_config(**overrides):
  config = smoke.get_config()
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for name in parents:
      target = target[name]
    target[leaf] = value
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Synthetic scenes prepared once for every test in this file."""
  workdir = str(tmp_path_factory.mktemp("prepare"))
  config = smoke_config()
  return train.resolve_data_dir(config, workdir)


def final_params(workdir):
  """(step, flat state as numpy) of the latest checkpoint in `workdir`."""
  return checkpointing.read_latest_state(os.path.join(workdir, "checkpoints"))


def test_four_devices_match_one_device(tmp_path, data_dir):
  assert jax.device_count() == 4
  common = {"data.dir": data_dir, "num_train_steps": 3, "log_every_steps": 1}
  one = train.train_and_evaluate(
    smoke_config(**common, **{"mesh.num_devices": 1}), str(tmp_path / "one")
  )
  four = train.train_and_evaluate(smoke_config(**common), str(tmp_path / "four"))
  losses = [k for k in one if "loss" in k and not k.startswith("eval/")]
  assert losses, one
  for key in losses:
    np.testing.assert_allclose(four[key], one[key], rtol=2e-4, atol=1e-5, err_msg=key)
  _, params_one = final_params(str(tmp_path / "one"))
  _, params_four = final_params(str(tmp_path / "four"))
  assert params_one.keys() == params_four.keys()
  # Adam divides by sqrt(v): a parameter whose gradient is ~0 can move by up to the learning
  # rate on float noise alone, so parameters agree to ~lr, not to float precision.
  for key in params_one:
    np.testing.assert_allclose(params_four[key], params_one[key], rtol=1e-2, atol=1e-3)


def test_batch_must_divide_device_count(tmp_path, data_dir):
  config = smoke_config(**{"data.dir": data_dir, "global_batch_size": 6})
  with pytest.raises(UserError, match="divide by the device count 4"):
    train.train_and_evaluate(config, str(tmp_path))


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
  config = smoke_config(
    **{
      "data.dir": data_dir,
      "num_train_steps": 12,
      "checkpoint_every_steps": 4,
      "debug.inject_nan_at_step": 7,
    }
  )
  with pytest.raises(FloatingPointError, match=r"step 7: \S+ is nan"):
    train.train_and_evaluate(config, str(tmp_path))
  step, params = final_params(str(tmp_path))
  assert step == 4
  assert all(np.isfinite(v).all() for v in params.values() if v.dtype.kind == "f")


def test_tensorboard_has_scalars_and_images(tmp_path, data_dir):
  config = smoke_config(**{"data.dir": data_dir, "num_train_steps": 4, "eval_every_steps": 4})
  train.train_and_evaluate(config, str(tmp_path))
  (event_file,) = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  events = event_accumulator.EventAccumulator(event_file, size_guidance={"images": 0})
  events.Reload()
  scalars = set(events.Tags()["scalars"])
  for tag in ("perf/images_per_second", "perf/step_time_s", "learning_rate"):
    assert any(t.endswith(tag) for t in scalars), (tag, scalars)
  assert any("loss" in t for t in scalars), scalars
  assert any("kl" in t for t in scalars), scalars
  assert "samples" in events.Tags()["images"]
  assert glob.glob(str(tmp_path / "samples" / "step_*.png"))


def _main_command(workdir, data_dir, *flags):
  return [
    sys.executable,
    "-m",
    "inpainting.main",
    "--config=configs/smoke.py",
    f"--workdir={workdir}",
    f"--config.data.dir={data_dir}",
    *flags,
  ]


def _run(command, repo_root, **kwargs):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  return subprocess.Popen(
    command,
    cwd=repo_root,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    **kwargs,
  )


def _wait_for_checkpoint(workdir, process, timeout=180.0):
  """Polls until a finished checkpoint folder exists; returns its step."""
  deadline = time.monotonic() + timeout
  directory = os.path.join(workdir, "checkpoints")
  while time.monotonic() < deadline:
    steps = (
      [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
    )
    if steps:
      return max(steps)
    if process.poll() is not None:
      raise AssertionError(f"trainer ended before a checkpoint: {process.stdout.read()}")
    time.sleep(0.01)
  process.kill()
  raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tmp_path, data_dir, repo_root):
  flags = ("--config.num_train_steps=60", "--config.checkpoint_every_steps=10")
  reference = _run(_main_command(tmp_path / "reference", data_dir, *flags), repo_root)
  out, _ = reference.communicate(timeout=600)
  assert reference.returncode == 0, out

  interrupted = tmp_path / "interrupted"
  process = _run(_main_command(interrupted, data_dir, *flags), repo_root)
  killed_after = _wait_for_checkpoint(str(interrupted), process)
  process.send_signal(signal.SIGKILL)
  process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL
  assert killed_after < 60

  resumed = _run(_main_command(interrupted, data_dir, *flags), repo_root)
  out, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, out
  assert "resumed from step" in out

  step_a, params_a = final_params(str(tmp_path / "reference"))
  step_b, params_b = final_params(str(interrupted))
  assert step_a == step_b == 60
  assert params_a.keys() == params_b.keys()
  for key in params_a:
    np.testing.assert_array_equal(params_a[key], params_b[key], err_msg=key)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path, data_dir, repo_root):
  flags = ("--config.num_train_steps=100000", "--config.checkpoint_every_steps=5")
  process = _run(_main_command(tmp_path, data_dir, *flags), repo_root)
  _wait_for_checkpoint(str(tmp_path), process)
  process.send_signal(signal.SIGTERM)
  out, _ = process.communicate(timeout=120)
  assert process.returncode == 0, out
  assert "stop requested" in out
  step, _ = final_params(str(tmp_path))
  assert 5 <= step < 100000
  assert f"saved step {step}" in out


def test_bad_config_is_one_line_error(tmp_path, repo_root):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "inpainting.main",
      "--config=configs/smoke.py",
      f"--workdir={tmp_path}",
      "--config.model.name=nonexistent",
    ],
    cwd=repo_root,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: unknown model 'nonexistent'")


@pytest.mark.parametrize(
  ("override", "message"),
  [
    ({"model.conv_impl": "fast"}, "model.conv_impl must be one of"),
    ({"model.dtype": "fp8"}, "model.dtype must be one of"),
  ],
)
def test_bad_model_settings_fail_before_any_work(tmp_path, override, message):
  config = smoke_config(**override)
  with pytest.raises(UserError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "data")  # Rejected before preparing synthetic data.
