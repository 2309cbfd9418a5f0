"""Two processes x two fake CPU devices, joined by jax.distributed on 127.0.0.1.

Runs launch/local.sh exactly as a user would; all traffic stays on the loopback address,
every subprocess is bounded in time and killed on failure.
"""

import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from inpainting import train
from tests.test_train import final_params, smoke_config

pytestmark = pytest.mark.slow
FINGERPRINT = re.compile(r"final state sha256 \(process (\d+)\): ([0-9a-f]{64})")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return train.resolve_data_dir(smoke_config(), str(tmp_path_factory.mktemp("prepare")))


def launch(repo_root, workdir, data_dir, *flags, num_processes=2):
  env = dict(os.environ, DEVICES_PER_PROCESS="2", PYTHON=os.environ.get("PYTHON", "python"))
  env.pop("XLA_FLAGS", None)
  # No persistent compilation cache here: an executable cached by a one-process run can be
  # picked up by a process of a multi-process run and deadlock its collectives.
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env["PATH"] = os.path.dirname(os.sys.executable) + os.pathsep + env.get("PATH", "")
  return subprocess.Popen(
    [
      "bash",
      "launch/local.sh",
      str(num_processes),
      "--config=configs/smoke.py",
      f"--workdir={workdir}",
      f"--config.data.dir={data_dir}",
      "--config.debug.record_example_ids=true",
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


def fingerprints(workdir):
  found = {}
  for k in range(2):
    with open(os.path.join(workdir, "logs", f"process_{k}.log"), encoding="utf-8") as f:
      for index, digest in FINGERPRINT.findall(f.read()):
        found[int(index)] = digest
  return found


def example_ids(workdir, process):
  path = os.path.join(workdir, "debug", f"example_ids_process_{process}.txt")
  with open(path, encoding="utf-8") as f:
    return [line.split("\t")[1].split() for line in f]


def test_two_processes_match_one_process(tmp_path, data_dir, repo_root):
  steps = "--config.num_train_steps=10"
  two = tmp_path / "two"
  assert finish(launch(repo_root, two, data_dir, steps)) == 0
  digests = fingerprints(str(two))
  assert set(digests) == {0, 1}
  assert digests[0] == digests[1], "processes ended with different parameters"

  # Disjoint reads: within every step the two processes saw different examples.
  ids0, ids1 = example_ids(str(two), 0), example_ids(str(two), 1)
  assert len(ids0) == len(ids1) == 10
  for batch0, batch1 in zip(ids0, ids1):
    assert not set(batch0) & set(batch1)

  one = tmp_path / "one"
  config = smoke_config(**{"data.dir": data_dir, "num_train_steps": 10})
  train.train_and_evaluate(config, str(one))
  _, params_one = final_params(str(one))
  _, params_two = final_params(str(two))
  assert params_one.keys() == params_two.keys()
  for key in params_one:
    # Parameters agree to ~the learning rate (see test_four_devices_match_one_device).
    np.testing.assert_allclose(params_two[key], params_one[key], rtol=1e-2, atol=1e-3, err_msg=key)


def test_two_processes_resume_after_kill(tmp_path, data_dir, repo_root):
  flags = ("--config.num_train_steps=40", "--config.checkpoint_every_steps=10")
  reference = tmp_path / "reference"
  assert finish(launch(repo_root, reference, data_dir, *flags)) == 0

  interrupted = tmp_path / "interrupted"
  process = launch(repo_root, interrupted, data_dir, *flags)
  checkpoints = interrupted / "checkpoints"
  deadline = time.monotonic() + 300
  while not (checkpoints.is_dir() and any(d.isdigit() for d in os.listdir(checkpoints))):
    assert process.poll() is None, "run ended before its first checkpoint"
    assert time.monotonic() < deadline, "no checkpoint appeared"
    time.sleep(0.02)
  os.killpg(process.pid, signal.SIGKILL)
  process.wait(timeout=60)

  assert finish(launch(repo_root, interrupted, data_dir, *flags)) == 0
  step_a, params_a = final_params(str(reference))
  step_b, params_b = final_params(str(interrupted))
  assert step_a == step_b == 40
  for key in params_a:
    np.testing.assert_array_equal(params_a[key], params_b[key], err_msg=key)
