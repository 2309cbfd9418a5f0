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
# and stops the others when one fails or when it is interrupted.
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
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'cleanup; exit 130' INT TERM

for ((k = 0; k < num_processes; k++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices" JAX_PLATFORMS=cpu \
    "$python" -m inpainting.main "$@" \
    --coordinator_address="127.0.0.1:$port" --num_processes="$num_processes" --process_id="$k" \
    >"$workdir/logs/process_$k.log" 2>&1 &
  pids+=($!)
done

status=0
for k in "${!pids[@]}"; do
  if ! wait "${pids[$k]}"; then
    echo "launch/local.sh: process $k failed; see $workdir/logs/process_$k.log" >&2
    status=1
    cleanup
  fi
done
exit $status
