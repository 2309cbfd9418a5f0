#!/usr/bin/env bash
# Issue 14's measurement, end to end on the CPU, printing the figures at the end:
#   1. prepare the chosen QuickDraw classes from ../shared/data (rasterised, 4 augmented
#      copies of each train drawing);
#   2. train configs/sketch.py twice, the centre mask and `full` (text-to-drawing), each
#      capped at TRAIN_MINUTES of wall clock (SIGTERM makes the trainer save and stop), so the
#      sketch model trains for at most 2 x 14 = 28 minutes;
#   3. train the sketch classifier on the train split (held-out accuracy = the ceiling);
#   4. explore: unconditional and per-class samples, z-switching between every ordered pair
#      of classes, caption interpolation, each scored by the classifier;
#   5. the same switch figure on synthetic scenes with the exact matcher (a short vaegan run
#      on scenes, or SYNTHETIC_WORKDIR=an existing run);
#   6. RGB or one channel: benchmarks/sketch_channels.py on the centre model.
#
#   bash scripts/sketch_experiment.sh                # the full run (about 45 minutes)
#   QUICK=1 OUT=/tmp/sketch bash scripts/sketch_experiment.sh   # tiny settings: a smoke test
#
# Every setting below can be overridden from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
OUT=${OUT:-workdirs/sketch_experiment}
QUICKDRAW=${QUICKDRAW:-../shared/data/quickdraw_344x25}
CLASSES=${CLASSES:-cat,sheep,house,The Eiffel Tower}
AUGMENT=${AUGMENT:-4}                  # stroke-augmented copies of each train drawing
TRAIN_MINUTES=${TRAIN_MINUTES:-14}     # wall-clock cap per sketch variant
SKETCH_STEPS=${SKETCH_STEPS:-}         # "" = the config's num_train_steps
VARIANT=${VARIANT:-}                   # ",runlocal" for a tiny model
CLASSIFIER_STEPS=${CLASSIFIER_STEPS:-2000}
NUM=${NUM:-5}                          # held-out drawings per class for switch/interpolate
SAMPLES=${SAMPLES:-64}                 # unconditional samples scored
SYNTHETIC_WORKDIR=${SYNTHETIC_WORKDIR:-}
SYNTHETIC_CONFIG=${SYNTHETIC_CONFIG:-configs/vaegan.py:runlocal}
SYNTHETIC_MINUTES=${SYNTHETIC_MINUTES:-10}
SYNTHETIC_STEPS=${SYNTHETIC_STEPS:-}
SYNTHETIC_NUM=${SYNTHETIC_NUM:-64}     # synthetic scenes switched
if [[ $QUICK == 1 ]]; then
  AUGMENT=0 VARIANT=,runlocal SKETCH_STEPS=${SKETCH_STEPS:-10} TRAIN_MINUTES=3
  CLASSIFIER_STEPS=20 NUM=2 SAMPLES=8 SYNTHETIC_CONFIG=configs/smoke.py SYNTHETIC_STEPS=10
  SYNTHETIC_MINUTES=3 SYNTHETIC_NUM=4
fi

PY=${PYTHON:-python}
mkdir -p "$OUT/figures" "$OUT/grids"
log() { echo "== $(date +%H:%M:%S) $*" >&2; }

train() {  # train WORKDIR CONFIG MINUTES STEPS [overrides...]
  local workdir=$1 config=$2 minutes=$3 steps=$4
  shift 4
  local extra=()
  [[ -n $steps ]] && extra+=("--config.num_train_steps=$steps" "--config.eval_every_steps=$steps" "--config.checkpoint_every_steps=$steps")
  local start=$SECONDS
  timeout --preserve-status --signal=TERM --kill-after=120 "${minutes}m" \
    "$PY" -m inpainting.main --config="$config" --workdir="$workdir" "$@" "${extra[@]}"
  log "trained $workdir in $((SECONDS - start)) s"
}

explore() {  # explore NAME MODE [flags...]: grid and figures named NAME
  local name=$1
  shift
  "$PY" -m inpainting.explore "$@" --out="$OUT/grids/$name.png" --metrics_out="$OUT/figures/$name.json" >/dev/null
}

log "1. preparing $CLASSES"
"$PY" -m data_prep.prepare --source=quickdraw --input="$QUICKDRAW" --classes="$CLASSES" \
  --augment="$AUGMENT" --output_dir="$OUT/data" --overwrite >/dev/null

log "2. training configs/sketch.py (centre, then full), at most $TRAIN_MINUTES minutes each"
train "$OUT/center" "configs/sketch.py:center$VARIANT" "$TRAIN_MINUTES" "$SKETCH_STEPS" --config.data.dir="$OUT/data"
train "$OUT/full" "configs/sketch.py:full$VARIANT" "$TRAIN_MINUTES" "$SKETCH_STEPS" --config.data.dir="$OUT/data"

log "3. training the sketch classifier ($CLASSIFIER_STEPS steps)"
"$PY" -m inpainting.metrics.sketch_classifier --data_dir="$OUT/data" --out="$OUT/classifier.npz" \
  --steps="$CLASSIFIER_STEPS" > "$OUT/figures/classifier.json"

log "4. explore: samples, switches, interpolations"
C=(--classifier="$OUT/classifier.npz")
explore samples_full sample --workdir="$OUT/full" --num="$SAMPLES" "${C[@]}"
explore samples_center sample --workdir="$OUT/center" --num="$SAMPLES" "${C[@]}"
IFS=',' read -r -a WORDS <<< "$CLASSES"
for word in "${WORDS[@]}"; do
  explore "samples_full_${word// /_}" sample --workdir="$OUT/full" --num=16 "${C[@]}" \
    --caption="$("$PY" -c "from inpainting import strokes; print(strokes.captions('''$word''')[0])")"
done
explore switch_center switch --workdir="$OUT/center" --class_a=all --class_b=all --num="$NUM" --samples=4 --grid_rows=60 "${C[@]}"
explore interpolate_center interpolate --workdir="$OUT/center" --class_a=all --class_b=all --num=1 "${C[@]}"
explore interpolate_full interpolate --workdir="$OUT/full" --class_a=all --class_b=all --num=1 "${C[@]}"

log "5. z-switching on synthetic scenes (exact matcher)"
if [[ -z $SYNTHETIC_WORKDIR ]]; then
  SYNTHETIC_WORKDIR=$OUT/synthetic
  train "$SYNTHETIC_WORKDIR" "$SYNTHETIC_CONFIG" "$SYNTHETIC_MINUTES" "$SYNTHETIC_STEPS"
fi
explore switch_synthetic switch --workdir="$SYNTHETIC_WORKDIR" --num="$SYNTHETIC_NUM" --samples=4

log "6. RGB or one channel"
"$PY" benchmarks/sketch_channels.py --workdir="$OUT/center" 2>/dev/null | tail -1 > "$OUT/figures/channels.json"

log "figures"
"$PY" - "$OUT" <<'EOF'
import glob, json, os, sys

out = sys.argv[1]
f = lambda name: json.load(open(os.path.join(out, "figures", name + ".json")))
pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"
clf = f("classifier")
print(f"classifier: {len(clf['classes'])} classes {clf['classes']}; held-out accuracy "
      f"{pct(clf['accuracy'])} on {clf['count']} real drawings (the ceiling); generated "
      f"non-drawings called a class: {pct(clf['negatives_recognisable_rate'])}")
for name in ("samples_full", "samples_center"):
  s = f(name)
  print(f"{name}: step {s['step']}, {s['num_samples']} unconditional samples recognisable "
        f"{pct(s['recognisable_rate'])} vs real held-out {pct(s['real']['recognisable_rate'])}; "
        f"classes {s['predicted_classes']}")
for path in sorted(glob.glob(os.path.join(out, "figures", "samples_full_*.json"))):
  s = json.load(open(path))
  print(f"  under {s['caption']!r}: classified {s.get('caption_class')} "
        f"{pct(s.get('caption_class_rate'))}, recognisable {pct(s['recognisable_rate'])}")
for name in ("switch_center", "switch_synthetic"):
  o = f(name)["overall"]
  print(f"{name} ({f(name)['step']} steps): switch success prior {pct(o.get('switch_success_prior'))}, "
        f"posterior(partial) {pct(o.get('switch_success_posterior_partial'))}, "
        f"posterior(completion) {pct(o.get('switch_success_posterior_completed'))}; border exact "
        f"{pct(o.get('border_exact_prior'))}; stayed A (prior) {pct(o.get('stayed_a_prior'))}; "
        f"erased drawing alone called B {pct(o.get('erased_classified_b'))}; control: under A's "
        f"own caption called A {pct(o.get('control_classified_a', o.get('control_compliance')))}")
for name in ("interpolate_center", "interpolate_full"):
  p = f(name).get("caption_path", {})
  print(f"{name}: {p.get('paths')} caption paths, monotone {pct(p.get('monotone_rate'))}, excess "
        f"variation {p.get('excess_variation', float('nan')):.3f}, P(B)/(P(A)+P(B)) "
        f"{p.get('start_mean', float('nan')):.2f} -> {p.get('end_mean', float('nan')):.2f}")
c = f("channels")
print(f"RGB vs one channel: one channel saves at most {pct(c['one_channel_saves_at_most'])} of a "
      f"train step's FLOPs; trained samples' colour spread {c['colour_spread_mean_levels']:.2f} "
      f"levels (>2 levels: {pct(c['colour_spread_over_2_levels'])})")
print(f"grids: {out}/grids/*.png")
EOF
