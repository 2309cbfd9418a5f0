"""The training loop: sharding equivalence (data, fsdp), exact resume, SIGTERM, NaN stop,
TensorBoard, loading a trained run, and the optimiser's schedule and clipping.

Two-run comparisons go through conftest's `compare_runs`: every metric of every step, and
every tensor's update from the common initial state. A run with a doubled learning rate
must fail that comparison, so a test that passes means the check could have failed.
"""

import glob
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from inpainting import checkpointing, inference, run, sharding, train
from inpainting.errors import UserError
from inpainting.models import layers

LEARNING_RATE = 2e-4  # configs/smoke.py's (vaegan's) learning_rate and d_learning_rate.
# Every in-process comparison run: four steps, each one logged, checkpoints at 2 and 4,
# one light evaluation at the end (the TensorBoard and load_run tests read it too).
COMPARED = {"num_train_steps": 4, "log_every_steps": 1, "checkpoint_every_steps": 2}
COMPARED_EVAL = {**COMPARED, "eval_every_steps": 4}
NO_EVAL = {"eval_every_steps": 10**9}  # Runs that never read the light evaluation skip it.
SKIP_EVAL = {"skip_metrics": ("perf/", "eval/")}  # Compares such a run with a reference.


def latest_state(workdir):
  """(step, flat state as numpy) of the latest checkpoint in `workdir`."""
  return checkpointing.read_latest_state(os.path.join(workdir, "checkpoints"))


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory, smoke_config, data_dir, initial_state_of):
  """The smoke model trained 4 steps on one device and on four (data parallel)."""
  root = tmp_path_factory.mktemp("reference")
  runs = {"one": str(root / "one"), "four": str(root / "four")}
  config = smoke_config(**{"data.dir": data_dir, **COMPARED_EVAL})
  assert config.optim.learning_rate == config.optim.d_learning_rate == LEARNING_RATE
  train.train_and_evaluate(
    smoke_config(**{"data.dir": data_dir, **COMPARED_EVAL, "mesh.num_devices": 1}), runs["one"]
  )
  train.train_and_evaluate(config, runs["four"])
  return {**runs, "initial": initial_state_of(config)}


# --- The same training on other topologies -----------------------------------------------


def test_four_devices_match_one_device(reference_runs, compare_runs, tb_scalars):
  assert jax.device_count() == 4
  scalars = tb_scalars(reference_runs["one"])
  assert set(scalars["loss_g"]) == {1, 2, 3, 4}  # Every step is compared.
  assert "eval/psnr_hole_prior" in scalars
  problems = compare_runs(
    reference_runs["one"], reference_runs["four"], reference_runs["initial"], LEARNING_RATE
  )
  assert problems == []


def test_a_doubled_learning_rate_fails_the_comparison(
  tmp_path, smoke_config, data_dir, reference_runs, compare_runs
):
  """The negative control: the comparison above can fail."""
  doubled = {"optim.learning_rate": 2 * LEARNING_RATE, "optim.d_learning_rate": 2 * LEARNING_RATE}
  config = smoke_config(**{"data.dir": data_dir, **COMPARED, **NO_EVAL, **doubled})
  train.train_and_evaluate(config, str(tmp_path))
  problems = compare_runs(
    reference_runs["one"], str(tmp_path), reference_runs["initial"], LEARNING_RATE, **SKIP_EVAL
  )
  # Each part of the check fails on its own: parameter updates, optimizer moments, losses.
  assert any(p.startswith("parameter updates:") for p in problems), problems
  assert any(p.startswith("update of model.generator.") for p in problems), problems
  assert any(p.startswith("update of model.opt_d.") for p in problems), problems
  assert any(p.startswith("metric loss_g at step 2:") for p in problems), problems


def test_fsdp_shards_parameters_and_matches_data_parallel(
  tmp_path, monkeypatch, smoke_config, data_dir, reference_runs, compare_runs
):
  # No smoke parameter reaches the real threshold; a lower one shards the larger kernels
  # (a few: every sharded parameter adds collectives, and compile time, to the step).
  monkeypatch.setattr(sharding, "_MIN_FSDP_SIZE", 4096)
  config = smoke_config(**{"data.dir": data_dir, **COMPARED, **NO_EVAL, "mesh.fsdp": 2})
  finalized = run.finalize_config(config)
  mesh = sharding.make_mesh(finalized.mesh, finalized.global_batch_size)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2}
  _, state, _ = train.create_state(finalized, mesh)
  flat, _ = checkpointing.flatten(state)
  sharded = {k: v for k, v in flat.items() if "fsdp" in tuple(v.sharding.spec)}
  assert any(k.startswith("model.generator.") for k in sharded), sorted(flat)
  assert any(".opt_state." in k for k in sharded)  # Adam's moments follow their parameter.
  for key, value in sharded.items():
    (dim,) = [d for d, axis in enumerate(value.sharding.spec) if axis == "fsdp"]
    assert value.addressable_shards[0].data.shape[dim] == value.shape[dim] // 2, key
  del state, flat, sharded

  train.train_and_evaluate(config, str(tmp_path))
  problems = compare_runs(
    reference_runs["four"], str(tmp_path), reference_runs["initial"], LEARNING_RATE, **SKIP_EVAL
  )
  assert problems == []


def test_batch_must_divide_device_count(tmp_path, smoke_config, data_dir):
  config = smoke_config(**{"data.dir": data_dir, "global_batch_size": 6})
  with pytest.raises(UserError, match="divide by the device count 4"):
    train.train_and_evaluate(config, str(tmp_path))


# --- Stops, checkpoints and what a run leaves behind -----------------------------------------


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, smoke_config, data_dir):
  # Step 6 gets a NaN image, so its loss, gradients and updated parameters are NaN; it is
  # also a checkpoint step, so a trainer that saved before checking would keep NaNs.
  config = smoke_config(
    **{
      "data.dir": data_dir,
      "num_train_steps": 8,
      "checkpoint_every_steps": 3,
      "debug.inject_nan_at_step": 6,
      **NO_EVAL,
    }
  )
  with pytest.raises(FloatingPointError, match=r"^step 6: \S+ is nan"):
    train.train_and_evaluate(config, str(tmp_path))
  step, state = latest_state(str(tmp_path))
  assert step == 3
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"]
  floats = [v for v in state.values() if v.dtype.kind == "f"]
  assert floats and all(np.isfinite(v).all() for v in floats)


def test_tensorboard_has_scalars_and_images(reference_runs):
  workdir = reference_runs["four"]
  (event_file,) = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  events = event_accumulator.EventAccumulator(event_file, size_guidance={"images": 0})
  events.Reload()
  scalars = set(events.Tags()["scalars"])
  for tag in (
    "perf/images_per_second",
    "perf/step_time_s",
    "perf/data_wait_fraction",
    "learning_rate",
  ):
    assert any(t.endswith(tag) for t in scalars), (tag, scalars)
  assert any("loss" in t for t in scalars), scalars
  assert any("kl" in t for t in scalars), scalars
  assert "samples" in events.Tags()["images"]
  assert glob.glob(os.path.join(workdir, "samples", "step_*.png"))


def test_load_run_restores_the_trained_weights_at_the_asked_step(
  reference_runs, tmp_path, smoke_config, data_dir
):
  workdir = reference_runs["four"]
  latest, saved = latest_state(workdir)
  assert latest == 4
  # The step-2 checkpoint, read without load_run: a copy of the run without step 4.
  shutil.copytree(os.path.join(workdir, "checkpoints"), tmp_path / "checkpoints")
  shutil.rmtree(tmp_path / "checkpoints" / "4")
  older, saved_older = latest_state(str(tmp_path))
  assert older == 2

  trained = inference.load_run(workdir)
  assert trained.step == 4
  restored, _ = checkpointing.flatten(trained.state)
  assert restored.keys() == saved.keys()
  for key, value in restored.items():
    np.testing.assert_array_equal(np.asarray(value), saved[key], err_msg=key)

  # Not a fresh initialisation: the trained parameters moved away from it.
  initial = reference_runs["initial"]
  params = [k for k in saved if k.startswith("model.generator.") and saved[k].dtype.kind == "f"]
  moved = [k for k in params if not np.array_equal(saved[k], initial[k])]
  assert len(moved) >= 0.9 * len(params), sorted(set(params) - set(moved))

  at_two = inference.load_run(workdir, step=2)
  assert at_two.step == 2
  restored_older, _ = checkpointing.flatten(at_two.state)
  for key, value in restored_older.items():
    np.testing.assert_array_equal(np.asarray(value), saved_older[key], err_msg=key)
  assert any(not np.array_equal(saved_older[k], saved[k]) for k in params)


def _main_command(workdir, data_dir, *flags):
  return [
    sys.executable,
    "-m",
    "inpainting.main",
    "--config=configs/smoke.py",
    f"--workdir={workdir}",
    f"--config.data.dir={data_dir}",
    f"--config.eval_every_steps={NO_EVAL['eval_every_steps']}",
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
  final = 40
  flags = (f"--config.num_train_steps={final}", "--config.checkpoint_every_steps=5")
  reference = _run(_main_command(tmp_path / "reference", data_dir, *flags), repo_root)
  out, _ = reference.communicate(timeout=600)
  assert reference.returncode == 0, out

  interrupted = tmp_path / "interrupted"
  process = _run(_main_command(interrupted, data_dir, *flags), repo_root)
  killed_after = _wait_for_checkpoint(str(interrupted), process)
  process.send_signal(signal.SIGKILL)
  process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL
  assert killed_after < final

  resumed = _run(_main_command(interrupted, data_dir, *flags), repo_root)
  out, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, out
  # It resumed (from scratch would also end bit-identical: training is deterministic).
  match = re.search(r"resumed from step (\d+)", out)
  assert match, out
  assert killed_after <= int(match.group(1)) < final

  step_a, params_a = latest_state(str(tmp_path / "reference"))
  step_b, params_b = latest_state(str(interrupted))
  assert step_a == step_b == final
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
  step, _ = latest_state(str(tmp_path))
  assert 5 <= step < 100000
  assert f"saved step {step}" in out


def test_bad_config_is_one_line_error(tmp_path, data_dir, repo_root):
  """The exit-code contract of the CLI; the other config errors are checked in-process."""
  result = subprocess.run(
    _main_command(tmp_path, data_dir, "--config.model.name=nonexistent"),
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
    ({"data.text_source": "dialog"}, "unknown text source 'dialog'"),
  ],
)
def test_bad_model_settings_fail_before_any_work(
  tmp_path, smoke_config, data_dir, override, message
):
  config = smoke_config(**{"data.dir": data_dir, **override})
  with pytest.raises(UserError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert os.listdir(tmp_path) == []  # Rejected before writing the run's files.


# --- The optimiser: warm-up, decay, clipping (inpainting/models/layers.py) -------------------


def _optim(warmup_steps=0, schedule="constant", grad_clip=0.0):
  return ml_collections.ConfigDict(
    {
      "warmup_steps": warmup_steps,
      "schedule": schedule,
      "grad_clip": grad_clip,
      "b1": 0.5,
      "b2": 0.999,
    }
  )


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_learning_rate_warms_up_then_stays_or_decays(schedule):
  peak, warmup, total = 1e-3, 10, 110

  def expected(step):
    if step < warmup:
      return peak * step / warmup
    if schedule == "constant":
      return peak
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

  rate = layers.learning_rate_schedule(_optim(warmup, schedule), peak, total)
  for step in (0, 1, 5, 9, 10, 11, 35, 60, 85, 109, 110):
    assert float(rate(step)) == pytest.approx(expected(step), rel=1e-5, abs=1e-6 * peak), step
  if schedule == "cosine":
    assert float(rate(60)) == pytest.approx(peak / 2)  # Half-way through the decay.
    assert float(rate(total)) == pytest.approx(0.0, abs=1e-12)

  no_warmup = layers.learning_rate_schedule(_optim(0, schedule), peak, total)
  assert float(no_warmup(0)) == pytest.approx(peak)


def test_adam_steps_by_the_scheduled_learning_rate():
  peak, warmup, total = 1e-3, 4, 20
  optim = _optim(warmup, "cosine")
  tx = layers.adam(optim, peak, total)
  rate = layers.learning_rate_schedule(optim, peak, total)
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  grads = {"w": jnp.array([0.5, -2.0, 3.0])}
  for step in range(8):
    updates, state = tx.update(grads, state, params)
    # The rate of the update just made is readable from the state (logged as learning_rate).
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(float(rate(step)))
    # A constant gradient: every Adam step is lr x sign(g) (bias-corrected moments).
    np.testing.assert_allclose(
      updates["w"], -float(rate(step)) * np.sign(grads["w"]), rtol=1e-4, atol=1e-12
    )


def test_grad_clip_applies_to_the_gradient_adam_sees():
  peak = 1e-3
  small = {"w": jnp.array([0.2, -0.9, 0.1, 0.0])}  # Norm < 1: never clipped.
  huge = {"w": jnp.array([0.0, 3e6, -4e6, 0.0])}  # Norm 5e6.
  rescaled = {"w": huge["w"] / 5e6}  # The same direction at norm 1.

  def updates(tx, sequence):
    params = {"w": jnp.zeros(4)}
    state = tx.init(params)
    out = []
    for grads in sequence:
      step, state = tx.update(grads, state, params)
      out.append(np.asarray(step["w"]))
    return out

  clipped = updates(layers.adam(_optim(grad_clip=1.0), peak, 10), [small, huge])
  by_hand = updates(layers.adam(_optim(), peak, 10), [small, rescaled])
  unclipped = updates(layers.adam(_optim(), peak, 10), [small, huge])
  for got, want in zip(clipped, by_hand):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)
  # Without clipping, the huge gradient swamps Adam's memory of the first one.
  assert np.abs(unclipped[1] - clipped[1]).max() > 0.5 * peak
