"""Two processes x two fake CPU devices, joined by jax.distributed on 127.0.0.1.

Runs launch/local.sh exactly as a user would; all traffic stays on the loopback address,
every subprocess is bounded in time and killed on failure. One two-process run
(`two_process_run`) is the reference of every test here.
"""

import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from inpainting import checkpointing, train

pytestmark = pytest.mark.slow
FINGERPRINT = re.compile(r"final state sha256 \(process (\d+)\): ([0-9a-f]{64})")
STEPS, CHECKPOINT_EVERY = 16, 4
LEARNING_RATE = 2e-4  # configs/smoke.py's.
# Every step logged (its metrics compared), no light evaluation (nothing here reads it).
OVERRIDES = {
  "num_train_steps": STEPS,
  "checkpoint_every_steps": CHECKPOINT_EVERY,
  "log_every_steps": 1,
  "eval_every_steps": 10**9,
  "debug.record_example_ids": True,
  # D over all patches: with the hole's patches only (configs/smoke.py's setting) G's and
  # D's gradients come from a quarter of the logits, and 1 and 4 devices' reduction orders
  # drift apart past the tolerances by step 11 (grad_norm_g 1.4114 against 1.4097;
  # measured 2026-11-27); the early steps agree. This test is about the harness.
  "loss.adversarial_patches": "all",
}


def launch(repo_root, workdir, data_dir, num_processes=2):
  env = dict(os.environ, DEVICES_PER_PROCESS="2", PYTHON=os.environ.get("PYTHON", "python"))
  env.pop("XLA_FLAGS", None)
  # No persistent compilation cache here: an executable cached by a one-process run can be
  # picked up by a process of a multi-process run and deadlock its collectives.
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env["PATH"] = os.path.dirname(os.sys.executable) + os.pathsep + env.get("PATH", "")
  flags = [f"--config.{k}={str(v).lower()}" for k, v in OVERRIDES.items()]
  return subprocess.Popen(
    [
      "bash",
      "launch/local.sh",
      str(num_processes),
      "--config=configs/smoke.py",
      f"--workdir={workdir}",
      f"--config.data.dir={data_dir}",
      *flags,
    ],
    cwd=repo_root,
    env=env,
    start_new_session=True,  # One process group: the test can kill every child at once.
  )


def finish(process, timeout=600):
  try:
    return process.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    raise


def process_logs(workdir):
  logs = []
  for k in range(2):
    with open(os.path.join(workdir, "logs", f"process_{k}.log"), encoding="utf-8") as f:
      logs.append(f.read())
  return logs


def fingerprints(workdir):
  found = {}
  for text in process_logs(workdir):
    for index, digest in FINGERPRINT.findall(text):
      found[int(index)] = digest
  return found


def example_ids(workdir, process):
  """[(step, [ids])] in the order the process recorded them."""
  path = os.path.join(workdir, "debug", f"example_ids_process_{process}.txt")
  with open(path, encoding="utf-8") as f:
    return [(int(step), ids.split()) for step, ids in (line.rstrip("\n").split("\t") for line in f)]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, data_dir, repo_root):
  """The smoke model trained STEPS steps by two processes with two devices each."""
  workdir = tmp_path_factory.mktemp("two_processes")
  assert finish(launch(repo_root, workdir, data_dir)) == 0, process_logs(workdir)
  return str(workdir)


def test_two_processes_match_one_process(
  two_process_run, tmp_path, data_dir, smoke_config, compare_runs, initial_state_of
):
  digests = fingerprints(two_process_run)
  assert set(digests) == {0, 1}
  assert digests[0] == digests[1], "processes ended with different parameters"

  one = str(tmp_path / "one")
  config = smoke_config(**{"data.dir": data_dir, **OVERRIDES})
  assert config.optim.learning_rate == config.optim.d_learning_rate == LEARNING_RATE
  train.train_and_evaluate(config, one)

  # Data: at every step the two processes read disjoint halves of the one-process batch.
  ids0, ids1 = example_ids(two_process_run, 0), example_ids(two_process_run, 1)
  ids_one = example_ids(one, 0)
  steps = list(range(1, STEPS + 1))
  assert [s for s, _ in ids0] == [s for s, _ in ids1] == [s for s, _ in ids_one] == steps
  for (step, batch0), (_, batch1), (_, batch) in zip(ids0, ids1, ids_one):
    assert not set(batch0) & set(batch1), step
    assert batch0 + batch1 == batch, step

  # Training: every metric of every step, and every tensor's update.
  problems = compare_runs(one, two_process_run, initial_state_of(config), LEARNING_RATE)
  assert problems == []


def test_two_processes_resume_after_kill(two_process_run, tmp_path, data_dir, repo_root):
  interrupted = tmp_path / "interrupted"
  process = launch(repo_root, interrupted, data_dir)
  checkpoints = interrupted / "checkpoints"
  deadline = time.monotonic() + 300
  while not (checkpoints.is_dir() and any(d.isdigit() for d in os.listdir(checkpoints))):
    assert process.poll() is None, "run ended before its first checkpoint"
    assert time.monotonic() < deadline, "no checkpoint appeared"
    time.sleep(0.02)
  os.killpg(process.pid, signal.SIGKILL)
  process.wait(timeout=60)
  killed_after = max(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  assert killed_after < STEPS

  assert finish(launch(repo_root, interrupted, data_dir)) == 0, process_logs(interrupted)
  # It resumed (from scratch would also end bit-identical: training is deterministic),
  # after the kill's checkpoint and before the end. Only process 0 prints progress.
  log = process_logs(interrupted)[0]
  resumed = [int(n) for n in re.findall(r"resumed from step (\d+)", log)]
  assert len(resumed) == 1, log
  assert killed_after <= resumed[0] < STEPS

  step_a, state_a = checkpointing.read_latest_state(os.path.join(two_process_run, "checkpoints"))
  step_b, state_b = checkpointing.read_latest_state(str(checkpoints))
  assert step_a == step_b == STEPS
  assert state_a.keys() == state_b.keys()
  for key in state_a:
    np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
  assert fingerprints(str(interrupted)) == fingerprints(two_process_run)
