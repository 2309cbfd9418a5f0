#!/usr/bin/env bash
# The GPU figures in one call (about 6-8 minutes on one H100), each script's JSON line
# collected into OUT/gpu_suite.jsonl:
#   1. pix2pix, ours vs PyTorch CUDA on the same GPU, interleaved (needs a CUDA torch;
#      skipped with a line saying so otherwise);
#   2. vaegan train step in bf16 at batch 256 and 1024: images/s, peak memory, MFU against
#      the bf16 matmul peak measured in the same run (FLOPs from the lowered program, which
#      still counts the convolutions that XLA:GPU hands to cuDNN);
#   3. async checkpoint overhead at that step time, at save intervals 100, 1000 and 5000;
#   4. the input pipeline on this host's cores, with 0 and 4 decode workers;
#   5. the CPU baseline of step 2 (vaegan, float32, batch 64) on the same host, for the ratio.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_suite.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-/tmp/gpu_suite}
mkdir -p "$OUT"
RESULTS=$OUT/gpu_suite.jsonl
: >"$RESULTS"

run() {  # name, timeout seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $(date +%H:%M:%S) $name" >&2
  if timeout "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; then
    tail -n 1 "$OUT/$name.out" | "$PY" -c "import json, sys; d = json.load(sys.stdin); d['name'] = '$name'; print(json.dumps(d))" >>"$RESULTS"
  else
    echo "{\"name\": \"$name\", \"failed\": true}" >>"$RESULTS"
    tail -n 3 "$OUT/$name.err" >&2
  fi
}

"$PY" -c "import jax; print(jax.devices())" >&2
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  run compare_torch_cuda 180 "$PY" benchmarks/compare_torch.py --pairs=3 --steps=20 --torch_device=cuda
else
  echo "== no CUDA PyTorch on this host: pix2pix comparison skipped" >&2
  echo '{"name": "compare_torch_cuda", "skipped": "no CUDA PyTorch"}' >>"$RESULTS"
fi
for batch in 256 1024; do
  run "vaegan_bf16_b$batch" 120 "$PY" benchmarks/train_step.py --config=configs/vaegan.py \
    --config.model.dtype=bfloat16 --batch="$batch" --steps=20
done
for every in 100 1000 5000; do
  run "checkpoint_every_$every" 90 "$PY" benchmarks/checkpoint.py --config=configs/vaegan.py \
    --config.model.dtype=bfloat16 --batch=1024 --every="$every"
done
for workers in 0 4; do
  run "input_pipeline_w$workers" 90 "$PY" benchmarks/input_pipeline.py --num_workers="$workers"
done
JAX_PLATFORMS=cpu run vaegan_cpu_f32_b64 120 "$PY" benchmarks/train_step.py \
  --config=configs/vaegan.py --batch=64 --steps=3
cat "$RESULTS"
