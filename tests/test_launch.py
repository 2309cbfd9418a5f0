"""Launchers: the SLURM header signals the trainers, local.sh forwards signals and waits.

No SLURM here: the sbatch header is read the way sbatch reads it. local.sh runs for real,
with a fake interpreter (a bash script) standing in for the trainers, so no JAX starts.
"""

import os
import re
import shlex
import signal
import subprocess
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SBATCH = os.path.join(REPO, "launch", "slurm", "train.sbatch")
LOCAL = os.path.join(REPO, "launch", "local.sh")
# sbatch --signal=[{R|B}:]<sig_num>[@sig_time]: "B:" signals only the batch shell, none of
# the job steps (sbatch manual); without it, every task of every step gets the signal.
SIGNAL_SPEC = re.compile(r"^(?:(?P<flags>[RB]+):)?(?P<signal>\w+)(?:@(?P<seconds>\d+))?$")


def sbatch_directives(path):
  """The #SBATCH options sbatch applies: those before the first command of the script."""
  options = []
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert lines[0].startswith("#!"), "sbatch needs a shebang line"
  for line in lines[1:]:
    stripped = line.strip()
    if not stripped:
      continue
    if not stripped.startswith("#"):
      break  # sbatch stops reading directives at the first command.
    if stripped.startswith("#SBATCH"):
      options += shlex.split(stripped[len("#SBATCH") :], comments=True)
  return options


def commands(path):
  """The script's non-comment lines, with backslash continuations joined."""
  with open(path, encoding="utf-8") as f:
    text = f.read().replace("\\\n", " ")
  return [
    line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
  ]


def test_sbatch_signal_reaches_the_trainers_before_the_time_limit():
  signals = [o.split("=", 1)[1] for o in sbatch_directives(SBATCH) if o.startswith("--signal=")]
  assert len(signals) == 1, signals
  spec = SIGNAL_SPEC.match(signals[0])
  assert spec, signals[0]
  # Not "B:": that signals only the batch shell, and the srun trainers never hear of it.
  assert "B" not in (spec["flags"] or ""), f"--signal={signals[0]} never reaches the job steps"
  # SIGTERM: what the trainer (and JAX's preemption service) turns into a checkpoint.
  name = spec["signal"].upper()
  number = (
    int(name)
    if name.isdigit()
    else signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
  )
  assert number == signal.SIGTERM
  # Time to save: sbatch's default (no "@") is 60 s before the end.
  assert int(spec["seconds"] or 60) >= 60


def test_sbatch_trainers_run_as_a_job_step():
  # The signal goes to job steps, so the trainers must be srun tasks, not children of the
  # batch shell; and srun must not be backgrounded (the batch shell would end the job).
  lines = commands(SBATCH)
  trainers = [line for line in lines if "inpainting.main" in line]
  assert trainers and all(line.startswith("srun ") for line in trainers), trainers
  assert not any(line.endswith("&") for line in trainers)
  subprocess.run(["bash", "-n", SBATCH], check=True)


# --- launch/local.sh with fake trainers -----------------------------------------------------------

FAKE_TRAINER = textwrap.dedent(
  """\
  #!/usr/bin/env bash
  # Stands in for `python -m inpainting.main ... --process_id=K`: on SIGTERM it takes a
  # while to "save a checkpoint", then exits 0, as the trainer does.
  for arg; do
    case "$arg" in
      --process_id=*) k=${arg#--process_id=} ;;
      --workdir=*) workdir=${arg#--workdir=} ;;
      --num_processes=*) count=${arg#--num_processes=} ;;
    esac
  done
  save() { sleep "${SAVE_SECONDS:-1}"; echo saved > "$workdir/saved_$k"; exit 0; }
  trap save TERM
  echo "$@"  # Into WORKDIR/logs/process_K.log.
  echo $$ > "$workdir/.started_$k" && mv "$workdir/.started_$k" "$workdir/started_$k"
  if [ "$k" = "${FAIL_PROCESS:--1}" ]; then
    # Fail once every process runs (and has its SIGTERM handler), as a crash mid-run would.
    until [ "$(ls "$workdir" | grep -c '^started_')" -ge "$count" ]; do sleep 0.02; done
    exit 3
  fi
  if [ -n "${EXIT_AT_ONCE:-}" ]; then exit 0; fi
  while :; do sleep 0.05; done
  """
)


@pytest.fixture
def fake_python(tmp_path):
  path = tmp_path / "fake_python"
  path.write_text(FAKE_TRAINER)
  path.chmod(0o755)
  return str(path)


def start_local(workdir, fake_python, num_processes=2, **env):
  environment = dict(os.environ, PYTHON=fake_python, COORDINATOR_PORT="1", **env)
  return subprocess.Popen(
    ["bash", LOCAL, str(num_processes), "--config=configs/smoke.py", f"--workdir={workdir}"],
    env=environment,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,  # Its own process group: the test can end all of it.
    # As from a terminal: SIGINT at its default, even where this process inherited it
    # ignored (a shell ignores SIGINT in its background jobs, and bash cannot trap a
    # signal ignored on entry). Seen: this test timing out in a backgrounded CI run.
    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
  )


def wait_for(paths, timeout=20.0):
  deadline = time.monotonic() + timeout
  while not all(os.path.exists(p) for p in paths):
    assert time.monotonic() < deadline, f"timed out waiting for {paths}"
    time.sleep(0.02)


def alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


@pytest.fixture
def launched():
  """Popen objects whose process group (launcher and trainers) is killed after the test."""
  started = []
  yield started
  for process in started:
    try:  # Trainers may outlive a launcher that did not wait for them.
      os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    process.wait()


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_local_forwards_the_signal_and_waits_for_the_checkpoints(
  tmp_path, fake_python, launched, signum, status
):
  workdir = tmp_path / "run"
  process = start_local(workdir, fake_python)
  launched.append(process)
  wait_for([workdir / f"started_{k}" for k in range(2)])
  pids = [int((workdir / f"started_{k}").read_text()) for k in range(2)]
  if signum == signal.SIGINT:
    os.killpg(process.pid, signum)  # Ctrl-C reaches the whole foreground group.
  else:
    os.kill(process.pid, signum)  # A scheduler or `kill` signals the launcher alone.
  assert process.wait(timeout=30) == status, process.stderr.read()
  # Both trainers got SIGTERM and had finished saving when the launcher returned.
  assert [(workdir / f"saved_{k}").read_text() for k in range(2)] == ["saved\n"] * 2
  assert not any(alive(pid) for pid in pids)


def test_local_runs_every_process_with_its_rank_and_exits_0(tmp_path, fake_python, launched):
  workdir = tmp_path / "run"
  process = start_local(workdir, fake_python, num_processes=3, EXIT_AT_ONCE="1")
  launched.append(process)
  assert process.wait(timeout=30) == 0, process.stderr.read()
  for k in range(3):
    args = (workdir / "logs" / f"process_{k}.log").read_text().split()
    assert args[:2] == ["-m", "inpainting.main"]
    assert "--config=configs/smoke.py" in args and f"--workdir={workdir}" in args
    assert args[-3:] == [
      "--coordinator_address=127.0.0.1:1",
      "--num_processes=3",
      f"--process_id={k}",
    ]


def test_local_stops_the_others_when_one_fails(tmp_path, fake_python, launched):
  workdir = tmp_path / "run"
  process = start_local(workdir, fake_python, FAIL_PROCESS="1", SAVE_SECONDS="0")
  launched.append(process)
  assert process.wait(timeout=30) == 1
  assert "process 1 failed" in process.stderr.read()
  assert (workdir / "saved_0").exists() and not (workdir / "saved_1").exists()


def test_local_second_interrupt_kills_at_once(tmp_path, fake_python, launched):
  workdir = tmp_path / "run"
  process = start_local(workdir, fake_python, SAVE_SECONDS="60")
  launched.append(process)
  wait_for([workdir / f"started_{k}" for k in range(2)])
  pids = [int((workdir / f"started_{k}").read_text()) for k in range(2)]
  os.kill(process.pid, signal.SIGTERM)
  time.sleep(0.5)
  assert process.poll() is None  # Waiting for the 60 s "checkpoints".
  os.kill(process.pid, signal.SIGTERM)
  assert process.wait(timeout=10) == 143
  # Gone within 2 s, not after their 60 s "saves" (the launcher reaps what it kills; one CI
  # run still saw a trainer an instant after the launcher's exit).
  deadline = time.monotonic() + 2.0
  while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
    time.sleep(0.02)
  assert not any(alive(pid) for pid in pids)
  assert not any((workdir / f"saved_{k}").exists() for k in range(2))
