#!/usr/bin/env bash
# The benchmark suite: converter, input pipeline, train steps, checkpoint overhead, and the
# PyTorch pix2pix reference when torch is installed. Prints one table.
#   benchmarks/run_all.sh [--quick]
# Each script's last line is a JSON object; this collects them. Numbers are medians on this
# machine; compare ratios across machines, not absolute times.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
steps=10
[ "${1:-}" = "--quick" ] && steps=3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() {  # name, command...
  local name=$1
  shift
  echo "== $name: $*" >&2
  "$@" 2>"$out/$name.err" | tail -n 1 >"$out/$name.json" || {
    echo "$name failed; see below" >&2
    tail -n 5 "$out/$name.err" >&2
    echo '{}' >"$out/$name.json"
  }
}

run prepare "$python" benchmarks/prepare.py
run input_pipeline "$python" benchmarks/input_pipeline.py
for config in vaegan l2 pix2pix; do
  run "train_$config" "$python" benchmarks/train_step.py --config="configs/$config.py" --batch=64 --steps="$steps"
done
run checkpoint "$python" benchmarks/checkpoint.py --config=configs/vaegan.py --batch=64 --steps="$steps"
if "$python" -c "import torch" 2>/dev/null; then
  run pix2pix_torch "$python" benchmarks/pix2pix_torch.py --batch=64 --steps="$steps"
fi

"$python" - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
  with open(os.path.join(out, name + ".json")) as f:
    text = f.read().strip()
  try:
    return json.loads(text or "{}")
  except json.JSONDecodeError:
    return {}
print(f"{'benchmark':<22} {'figure':>16}  unit")
p = load("prepare")
print(f"{'prepare (64px JPEGs)':<22} {p.get('images_per_second', float('nan')):>16.0f}  images/s")
i = load("input_pipeline")
print(f"{'input pipeline':<22} {i.get('examples_per_s', float('nan')):>16.0f}  examples/s")
for config in ("vaegan", "l2", "pix2pix"):
  t = load("train_" + config)
  if t:
    print(f"{'train ' + config:<22} {t['images_per_second']:>16.1f}  images/s "
          f"({t['gflops_per_step']:.0f} GFLOP/step, MFU {100 * t['mfu_vs_f32_peak']:.1f}% of f32 matmul peak)")
  else:
    print(f"{'train ' + config:<22} {'failed':>16}")
c = load("checkpoint")
if c:
  print(f"{'checkpoint (vaegan)':<22} {100 * c['overhead_fraction']:>16.2f}  % of step time, async save "
        f"every {c['save_every_steps']} steps ({1e3 * c['median_async_overhead_seconds']:.0f} ms/save)")
torch_ref, jax_ref = load("pix2pix_torch"), load("train_pix2pix")
if torch_ref:
  ratio = jax_ref.get("images_per_second", float("nan")) / torch_ref["images_per_second"]
  print(f"{'pix2pix in PyTorch':<22} {torch_ref['images_per_second']:>16.1f}  images/s "
        f"(this codebase / PyTorch = {ratio:.2f})")
PY
