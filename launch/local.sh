#!/usr/bin/env bash
# Try the multi-host path on one machine: N processes, each with its own fake CPU devices,
# joined by jax.distributed through an explicit coordinator on 127.0.0.1.
#
#   launch/local.sh N --config=configs/smoke.py --workdir=/tmp/run [--config.x=y ...]
#
# Environment knobs:
#   DEVICES_PER_PROCESS   fake CPU devices per process (default 2)
#   COORDINATOR_PORT      coordinator port on 127.0.0.1 (default: a free one)
#   PYTHON                interpreter (default: python)
# Each process logs to WORKDIR/logs/process_K.log; the script exits non-zero if any fails,
# and stops the others (SIGTERM) when one fails. Interrupted (Ctrl-C or SIGTERM), it sends
# SIGTERM to every process, so each saves a preemption checkpoint, and waits for them to
# finish before it exits (130 after SIGINT, 143 after SIGTERM); a second interrupt while
# it waits kills them at once (SIGKILL), without a checkpoint.
set -euo pipefail

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: launch/local.sh NUM_PROCESSES --config=... --workdir=... [flags]" >&2
  exit 2
fi
num_processes=$1
shift
workdir=""
for arg in "$@"; do
  case "$arg" in --workdir=*) workdir="${arg#--workdir=}" ;; esac
done
if [ -z "$workdir" ]; then
  echo "launch/local.sh: --workdir=DIR is required" >&2
  exit 2
fi
python=${PYTHON:-python}
devices=${DEVICES_PER_PROCESS:-2}
port=${COORDINATOR_PORT:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p "$workdir/logs"

pids=()
signal_all() {  # signal_all SIGNAL: to every process started (finished ones are skipped)
  for pid in "${pids[@]}"; do kill -s "$1" "$pid" 2>/dev/null || true; done
}
stop() {  # stop STATUS: forward SIGTERM, wait for the checkpoints, exit with STATUS
  trap 'signal_all KILL' INT TERM
  signal_all TERM
  # A second interrupt cuts a `wait` short: wait again until each child is reaped (kill -0
  # still succeeds on an unreaped, dead child), so none outlives this script as a zombie.
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do wait "$pid" 2>/dev/null || true; done
  done
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM

for ((k = 0; k < num_processes; k++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices" JAX_PLATFORMS=cpu \
    "$python" -m inpainting.main "$@" \
    --coordinator_address="127.0.0.1:$port" --num_processes="$num_processes" --process_id="$k" \
    >"$workdir/logs/process_$k.log" 2>&1 &
  pids+=($!)
done

# Reap the processes in the order they end (not in launch order: a failed process K must
# stop the others even while process 0 still runs, e.g. blocked in a collective waiting for
# K). `wait -n` cannot tell which process ended when several end together, so poll: once
# bash has reaped a child, `kill -0` fails and `wait PID` returns its saved status.
status=0
running=("${!pids[@]}")
while [ ${#running[@]} -gt 0 ]; do
  still=()
  for k in "${running[@]}"; do
    if kill -0 "${pids[$k]}" 2>/dev/null; then
      still+=("$k")
    elif ! wait "${pids[$k]}"; then
      echo "launch/local.sh: process $k failed; see $workdir/logs/process_$k.log" >&2
      status=1
      signal_all TERM
    fi
  done
  running=(${still[@]+"${still[@]}"})
  [ ${#running[@]} -eq 0 ] || sleep 0.2
done
exit $status
