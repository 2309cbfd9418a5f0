"""Evaluation: `python -m inpainting.evaluate --workdir=W [--split=validation] [--num_samples=K]`.

Answers the course's three questions on one split, for the run in W (and, with
`--compare=W2,W3`, other runs side by side), against two caption-blind baselines:

  quality      L1, L2, PSNR, SSIM on the hole and the whole image, first sample and best of
               K; LPIPS (AlexNet); FID and KID on Inception pool3 features when the weights
               were converted (`python -m data_prep.inception_weights`).
  diversity    mean pairwise LPIPS among the K prior samples of one input.
  caption use  every metric with the true caption, another image's caption (shuffled) and
               no caption (empty); the differences with paired-bootstrap 95% intervals; on
               synthetic scenes, exact compliance of the drawn centre object with the caption
               (and, with shuffled captions, with the caption the model was given); with
               `--heldout_wording`, again with captions in wordings never used for training
               (reworded, `inpainting/metrics/wording.py`).
  synthetic    per input, the number of distinct centre classes among the K samples
  diversity    (coverage_distinct_k: 1 = collapsed; matters with no caption, when all 120
               classes fit) and the fraction of samples that are a clean rendering of some
               class (valid_object_rate); see inpainting/metrics/compliance.py.

Writes W/eval/<split>/metrics.json, report.md with PNG plots, and the same scalars to
TensorBoard (W/tensorboard, tags evaluate/<split>/...).
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a program, so importing this module adds no global flags."""
  flags.DEFINE_string("workdir", None, "A trained run's workdir.")
  flags.DEFINE_string("split", "validation", "Split to evaluate.")
  flags.DEFINE_string(
    "data_dir", None, "A prepared folder to evaluate on (default: the run's own data)."
  )
  flags.DEFINE_integer("num_samples", 4, "Samples per input (K) for best-of-K and diversity.")
  flags.DEFINE_integer("max_examples", 512, "Examples evaluated (from the start of the split).")
  flags.DEFINE_integer("batch_size", 64, "Examples per sampling batch.")
  flags.DEFINE_list("compare", [], "Other workdirs to evaluate side by side (e.g. l2, pix2pix).")
  flags.DEFINE_enum("fid", "auto", ["auto", "on", "off"], "FID/KID: auto = if weights exist.")
  flags.DEFINE_string(
    "feature_cache",
    DEFAULT_FEATURE_CACHE,
    "Folder of cached Inception features of ground truth and baseline fills ('' = none).",
  )
  flags.DEFINE_integer(
    "curve_examples", 128, "Examples per checkpoint for the metric-vs-step curve."
  )
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_bool(
    "heldout_wording",
    False,
    "Synthetic scenes: also evaluate with captions in held-out wordings (condition 'reworded').",
  )
  flags.DEFINE_bool(
    "average",
    True,
    "Sample with the moving average of the weights when the run keeps one (optim.ema_decay"
    " > 0); false = the raw weights, written to eval/<split>-raw.",
  )
  flags.mark_flag_as_required("workdir")


# Inception features of inputs that do not depend on the run (ground truth, caption-blind
# fills), keyed by content: later evaluations of the same examples skip them.
DEFAULT_FEATURE_CACHE = os.path.join("~", ".cache", "inpainting", "features")

# Caption conditions compared, and the pipeline's caption mode that gives each.
CAPTION_CONDITIONS = {"true": "first", "shuffled": "shuffled", "empty": "empty"}
# With --heldout_wording: each example's own scene captioned with a held-out template
# (inpainting/metrics/wording.py), read with the pipeline's "first" mode and re-captioned.
REWORDED = "reworded"
# Conditions "turn_0".."turn_T" of a run that reads a conversation: the text of the context
# caption and the first t turns, as its data.text_source reads them.
TURN_PREFIX = "turn_"
# Metrics compared across caption modes, with their direction.
KEY_METRICS = {
  "psnr_hole": True,
  "ssim_hole": True,
  "l1_hole": False,
  "lpips": False,
  "compliance_all": True,
}
PSNR_CAP = 100.0  # Identical images give +inf; capped so means and bootstraps stay finite.


# --- Data ------------------------------------------------------------------------------------


def batches(
  data_dir: str,
  split: str,
  run,
  caption_mode: str,
  limit: int,
  batch_size: int,
  text_source: str | None = None,
):
  """Host batches of the first `limit` examples of `split`, deterministic order, with the
  run's batch fields and tokenised with the run's own tokenizer; `text_source` overrides
  the run's data.text_source."""
  import ml_collections  # noqa: PLC0415

  from inpainting import input_pipeline  # noqa: PLC0415
  from inpainting import run as run_layout  # noqa: PLC0415

  data_config = ml_collections.ConfigDict(run.config.data.to_dict())
  if text_source is not None:
    data_config.text_source = text_source
  ds = input_pipeline.create_dataset(
    data_dir,
    split,
    data_config,
    batch_size,
    seed=0,
    train=False,
    caption_mode=caption_mode,
    spec=run.family.batch,
    tokenizer_path=run_layout.tokenizer_path(run.workdir),
  )
  yield from input_pipeline.first_examples(ds, limit)


# --- Per-image metrics -----------------------------------------------------------------------


class Scorer:
  """Computes per-image metrics of K completions against the ground truth."""

  def __init__(self):
    import jax  # noqa: PLC0415

    from inpainting.metrics import fidelity  # noqa: PLC0415
    from inpainting.metrics.lpips import LPIPS  # noqa: PLC0415

    self._lpips = LPIPS()
    self._fidelity = jax.jit(fidelity.all_metrics)
    self._higher = {name: higher for name, (_, higher) in fidelity.METRICS.items()}
    self._renderer = None
    # Wall-clock seconds by part, for the report's `seconds_by_part`.
    self.seconds = collections.Counter()

  def __call__(self, samples: np.ndarray, batch: dict) -> dict[str, np.ndarray]:
    """samples: [K, B, H, W, 3]. Returns {metric: [B]} (first sample, best-of-K, diversity)."""
    started = time.perf_counter()
    truth, mask = batch["image"], batch["mask"]
    per_sample = [
      {k: np.asarray(v, np.float64) for k, v in self._fidelity(s, truth, mask).items()}
      for s in samples
    ]
    lpips_values, diversity = self._lpips.score_samples(samples, truth)
    out = {}
    for name in per_sample[0]:
      values = np.stack([p[name] for p in per_sample])
      if name.startswith("psnr"):
        values = np.minimum(values, PSNR_CAP)
      out[name] = values[0]
      higher = self._higher[name.removesuffix("_hole")]
      out[f"{name}_best_of_k"] = values.max(0) if higher else values.min(0)
    lpips_values = lpips_values.astype(np.float64)
    out["lpips"] = lpips_values[0]
    out["lpips_best_of_k"] = lpips_values.min(0)
    if diversity is not None:
      out["diversity_lpips"] = diversity.astype(np.float64)
    self.seconds["pixel_metrics_and_lpips"] += time.perf_counter() - started
    if self._renderer is None:
      from inpainting.metrics import compliance  # noqa: PLC0415

      self._renderer = compliance.CandidateRenderer()
    started = time.perf_counter()
    out.update(synthetic_metrics(samples, batch, self._renderer))
    self.seconds["scene_metrics"] += time.perf_counter() - started
    return out


def synthetic_metrics(samples: np.ndarray, batch: dict, renderer=None) -> dict[str, np.ndarray]:
  """Per-image metrics of K samples [K, B, ...] on synthetic scenes; {} for other data.

  `compliance.scene_metrics`: compliance_* (first sample vs the scene's own caption),
  coverage_distinct_k (K > 1), valid_object_rate and, when the batch says which scene's
  caption each example was given (`given_scene`, see `given_scenes`), obeys_caption_*.
  """
  from inpainting.metrics import compliance  # noqa: PLC0415

  scenes = [json.loads(s) if s else None for s in batch.get("scene", [])]
  if not scenes or not all(scenes):
    return {}
  given = batch.get("given_scene")
  given = None if given is None else [json.loads(s) for s in given]
  revealed = batch.get("revealed")
  revealed = None if revealed is None else [set(r.split(",")) - {""} for r in revealed]
  return compliance.scene_metrics(samples, scenes, batch["mask"], given, renderer, revealed)


def given_scenes(batch: dict, check_captions: bool = True) -> np.ndarray:
  """With shuffled captions: the scene JSON of the example whose caption each example got.

  The input pipeline gives example i the caption of example i - 1 of the same batch
  (`captions[-1:] + captions[:-1]` in input_pipeline._LoadBatch), so that example's scene
  is taken from the batch. Parsing the caption text instead would have to assume which of
  the objects it names is the centre one (the generator names it first, held-out wordings
  need not). Each given caption is checked to name its donor's centre object as "a {size}
  {colour} {shape}", which every generator caption does, so a pipeline that paired captions
  otherwise fails here instead of scoring against the wrong scene. A run that reads
  conversation text (data.text_source) is not checked (`check_captions=False`): its texts
  name the centre object only in answers such as "it is red".

  Raises:
    ValueError: a caption that does not name the centre object of the scene it came from.
  """
  from inpainting.metrics import compliance  # noqa: PLC0415

  donors = np.roll(np.asarray(batch["scene"]), 1)
  if not check_captions:
    return donors
  for i, (caption, donor) in enumerate(zip(batch["caption"], donors)):
    if donor and not compliance.describes_center(str(caption), json.loads(donor)):
      raise ValueError(
        f"shuffled caption {i} ({caption!r}) does not name the centre object of example "
        f"{(i - 1) % len(donors)}: the pipeline no longer gives example i the caption of i - 1"
      )
  return donors


def _with_revealed(batch_iter, turn: int):
  """Adds `revealed`: the attributes each example's first `turn` dialogue turns tell."""
  for batch in batch_iter:
    told = [",".join(r.split(",")[:turn]) if r else "" for r in batch["reveals"]]
    yield {**batch, "revealed": np.array(told, dtype=np.str_)}


def _with_given_scenes(batch_iter, check_captions: bool = True):
  for batch in batch_iter:
    if all(batch["scene"]):
      batch = {**batch, "given_scene": given_scenes(batch, check_captions)}
    yield batch


def evaluate_method(
  complete: Callable[[dict], np.ndarray],
  batch_iter,
  scorer: Scorer,
  features=None,
  real_cache: list | None = None,
  cache_fakes: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Runs `complete` (batch -> [K, B, ...]) over batches; returns per-image metrics and,
  if `features` is given, Inception features of the first sample and of the ground truth.
  `real_cache` keeps the ground truth's features of earlier passes over the same batches;
  `cache_fakes` lets `features` cache the samples' too (for deterministic fills)."""
  real_cache = [] if real_cache is None else real_cache
  metrics: dict[str, list[np.ndarray]] = {}
  fake, real = [], []
  for index, batch in enumerate(batch_iter):
    started = time.perf_counter()
    samples = np.asarray(complete(batch))
    scorer.seconds["sampling"] += time.perf_counter() - started
    for name, values in scorer(samples, batch).items():
      metrics.setdefault(name, []).append(values)
    if features is not None:
      started = time.perf_counter()
      fake.append(features(samples[0], cache=cache_fakes))
      # The ground truth is the same in every pass over the "true" batches: computed once.
      if index == len(real_cache):
        real_cache.append(features(batch["image"], cache=True))
      real.append(real_cache[index])
      scorer.seconds["inception"] += time.perf_counter() - started
  per_image = {k: np.concatenate(v) for k, v in metrics.items()}
  inception = {"fake": np.concatenate(fake), "real": np.concatenate(real)} if fake else {}
  return per_image, inception


def summarize(per_image: dict[str, np.ndarray], seed: int) -> dict[str, dict[str, float]]:
  from inpainting.metrics import stats  # noqa: PLC0415

  return {k: stats.bootstrap_ci(v, seed=seed).as_dict() for k, v in per_image.items()}


# --- The command -----------------------------------------------------------------------------


def run_evaluation(
  workdir: str,
  *,
  split: str = "validation",
  data_dir: str | None = None,
  num_samples: int = 4,
  max_examples: int = 512,
  batch_size: int = 64,
  compare: list[str] | tuple[str, ...] = (),
  fid: str = "auto",
  feature_cache: str = DEFAULT_FEATURE_CACHE,
  curve_examples: int = 128,
  seed: int = 0,
  heldout_wording: bool = False,
  average: bool = True,
) -> dict:
  """Evaluates the run in `workdir` (and `compare` runs) on `data_dir` (default: the run's
  data); writes and returns the report. Every run tokenises with its own tokenizer.
  `heldout_wording` adds the caption condition "reworded" (synthetic scenes only);
  `average=False` samples the main run with its raw weights rather than their moving
  average, into its own folder (`eval/<name>-raw`)."""
  from inpainting import baselines, inference  # noqa: PLC0415
  from inpainting.errors import UserError  # noqa: PLC0415
  from inpainting.metrics import stats  # noqa: PLC0415

  if num_samples < 1 or max_examples < 1 or batch_size < 1:
    raise UserError("num_samples, max_examples and batch_size must be positive")
  workdir = os.path.abspath(workdir)
  main_run = inference.load_run(workdir, average=average)
  runs = {main_run.name: main_run}
  for other in compare:
    run = inference.load_run(other)
    runs.setdefault(run.name, run)
  config = main_run.config
  data_dir = os.path.abspath(data_dir) if data_dir else config.data.dir
  if not os.path.isdir(data_dir):
    raise UserError(f"data folder {data_dir} does not exist; prepare it or pass --data_dir")
  # Another dataset gets its own folder and TensorBoard tags: W/eval/<folder name>-<split>.
  eval_name = split if data_dir == config.data.dir else f"{os.path.basename(data_dir)}-{split}"
  eval_name += "" if average else "-raw"
  out_dir = os.path.join(workdir, "eval", eval_name)
  os.makedirs(out_dir, exist_ok=True)
  scorer = Scorer()
  features = _inception(fid, feature_cache)
  started = time.perf_counter()

  from inpainting import batching  # noqa: PLC0415

  source = batching.text_source_of(config.data)
  reads_conversation = batching.reads_conversation(config.data)

  def data(mode: str, limit: int = max_examples, run=main_run):
    try:
      if mode == REWORDED:
        return _reworded(data_dir, split, run, limit, batch_size, seed)
      if mode.startswith(TURN_PREFIX):
        turn = int(mode[len(TURN_PREFIX) :])
        at_turn = batching.text_at_turn(source, turn)
        found = batches(data_dir, split, run, "first", limit, batch_size, at_turn)
        return _with_revealed(found, turn)
      found = batches(data_dir, split, run, CAPTION_CONDITIONS[mode], limit, batch_size)
      if mode != "shuffled":
        return found
      return _with_given_scenes(
        found, check_captions=not batching.reads_conversation(run.config.data)
      )
    except ValueError as error:  # A folder without this split or tokenizer: one line.
      raise UserError(str(error)) from None

  if heldout_wording and reads_conversation:
    logging.info("held-out wording rewrites captions; skipped for text source %r", source)
  conditions = [
    *CAPTION_CONDITIONS,
    *([REWORDED] if heldout_wording and not reads_conversation else []),
  ]
  # A run that reads a conversation is also evaluated after each turn (main run only).
  turn_modes = []
  if reads_conversation:
    first = next(iter(data("true", limit=1)))
    num_turns = len(first["reveals"][0].split(",")) if first["reveals"][0] else 0
    turn_modes = [f"{TURN_PREFIX}{t}" for t in range(num_turns + 1)]

  # --- Models under each caption mode ---
  per_image: dict[str, dict[str, dict[str, np.ndarray]]] = {}
  fid_scores: dict[str, dict[str, float]] = {}
  real_features: list = []  # Inception features of the "true" batches' ground truth.
  for name, run in runs.items():
    per_image[name] = {}
    for mode in conditions:
      logging.info("evaluating %s with %s captions", name, mode)
      want_features = features if mode == "true" else None
      values, inception = evaluate_method(
        lambda b, run=run: run.sample(b, num_samples, seed),
        data(mode, run=run),
        scorer,
        want_features,
        real_features,
      )
      per_image[name][mode] = values
      if inception:
        fid_scores[name] = _fid(inception)
  # Each turn's first samples; the holes and ground truth are the same in every turn.
  turn_firsts, holes, truths = [], [], []
  for turn, mode in enumerate(turn_modes):
    logging.info("evaluating %s %s", main_run.name, mode)
    firsts = []

    def complete(batch, firsts=firsts, turn=turn):
      samples = np.asarray(main_run.sample(batch, num_samples, seed))
      firsts.append(samples[0])
      if turn == 0:
        holes.append(batch["mask"])
        truths.append(batch["image"])
      return samples

    per_image[main_run.name][mode], _ = evaluate_method(complete, data(mode), scorer)
    turn_firsts.append(np.concatenate(firsts))
  hole = np.concatenate(holes) if holes else None
  _add_background_change(per_image[main_run.name], turn_modes, turn_firsts, hole)

  # --- Caption-blind baselines (same examples) ---
  for name, fill in baselines.BASELINES.items():

    def complete(batch, fill=fill):
      return np.asarray(fill(batch["image"], batch["mask"]))[None]

    values, inception = evaluate_method(
      complete, data("true"), scorer, features, real_features, cache_fakes=True
    )
    per_image[f"baseline_{name}"] = {"true": values}
    if inception:
      fid_scores[f"baseline_{name}"] = _fid(inception)

  # --- Summaries: means with bootstrap CIs; caption effects as paired differences ---
  summary = {
    method: {mode: summarize(values, seed) for mode, values in modes.items()}
    for method, modes in per_image.items()
  }
  caption_effect = {}
  for method, modes in per_image.items():
    if "shuffled" not in modes:
      continue
    caption_effect[method] = {}
    for other in ("shuffled", "empty", REWORDED):
      if other not in modes:
        continue
      for metric in KEY_METRICS:
        if metric in modes["true"] and metric in modes[other]:
          interval = stats.paired_bootstrap_ci(
            modes["true"][metric], modes[other][metric], seed=seed
          )
          caption_effect[method][f"true_minus_{other}/{metric}"] = interval.as_dict()

  seconds_by_part = dict(scorer.seconds)  # Before the curve, which reuses the scorer.
  started_curve = time.perf_counter()
  curve = _metric_vs_step(workdir, main_run, data, curve_examples, scorer, seed, average)
  seconds_curve = time.perf_counter() - started_curve
  first_examples = next(iter(per_image[main_run.name]["true"].values()))
  report = {
    "workdir": workdir,
    "split": split,
    "data_dir": data_dir,
    "checkpoint_step": main_run.step,
    # The main run's weights: their moving average if kept, unless --average=false.
    "weights": "raw"
    if not average or main_run.config.optim.get("ema_decay", 0) <= 0
    else "average",
    "num_examples": int(len(first_examples)),
    "num_samples": num_samples,
    "out_dir": out_dir,
    "config": config.to_dict(),
    "runs": {name: {"workdir": run.workdir, "step": run.step} for name, run in runs.items()},
    "metrics": summary,
    "caption_effect": caption_effect,
    "fid_kid": fid_scores,
    "fid_note": "" if features else "FID/KID skipped: run `python -m data_prep.inception_weights`",
    # Images run through Inception in this evaluation; the rest came from the feature cache.
    "inception_images_computed": features.computed_images if features else 0,
    "chance": _chance(per_image),
    "valid_rms_threshold": _valid_threshold(per_image),
    "metric_vs_step": curve,
    "per_turn": _per_turn(per_image[main_run.name], turn_modes, seed),
    "seconds": time.perf_counter() - started,
    # Where the time went; the parts do not overlap, the rest is loading data and FID maths.
    "seconds_by_part": {**seconds_by_part, "metric_vs_step_curve": seconds_curve},
  }
  _write_json(os.path.join(out_dir, "metrics.json"), report)
  from inpainting import report as report_lib  # noqa: PLC0415

  strips = _turn_strips(turn_firsts, hole, np.concatenate(truths)) if turn_firsts else None
  report_lib.write(out_dir, report, _grid(main_run, data, num_samples, seed), strips)
  _tensorboard(workdir, eval_name, report)
  return report


def _reworded(data_dir, split, run, limit, batch_size, seed):
  """The "reworded" condition: held-out captions of each example's own scene."""
  from inpainting import run as run_layout  # noqa: PLC0415
  from inpainting.errors import UserError  # noqa: PLC0415
  from inpainting.metrics import wording  # noqa: PLC0415

  found = wording.batches(
    data_dir,
    split,
    run.config.data,
    run_layout.tokenizer_path(run.workdir),
    limit,
    batch_size,
    spec=run.family.batch,
    seed=seed,
  )
  try:
    yield from found
  except ValueError as error:  # Not synthetic scenes: one line.
    raise UserError(f"--heldout_wording: {error}") from None


def _inception(mode: str, cache_dir: str = ""):
  if mode == "off":
    return None
  from inpainting.errors import UserError  # noqa: PLC0415
  from inpainting.metrics import inception  # noqa: PLC0415

  try:
    return inception.InceptionFeatures(cache_dir=os.path.expanduser(cache_dir) or None)
  except UserError:
    if mode == "on":
      raise
    logging.warning("FID/KID skipped: no Inception weights (python -m data_prep.inception_weights)")
    return None


def _fid(inception_features: dict[str, np.ndarray]) -> dict[str, float]:
  from inpainting.metrics import inception  # noqa: PLC0415

  real, fake = inception_features["real"], inception_features["fake"]
  # Subsets of 1000 as usual, but at most half the set so that subsets differ and the
  # standard deviation means something on small evaluations.
  subset = max(2, min(1000, len(real) // 2))
  kid_mean, kid_std = inception.kid(real, fake, subset_size=subset)
  return {
    "fid": float(inception.fid(real, fake)),
    "kid": float(kid_mean),
    "kid_std": float(kid_std),
  }


def _add_background_change(per_mode, turn_modes, firsts, mask) -> None:
  """Adds `background_change_to_next` [N] to turn t < T: how much the first sample's
  background-only hole pixels (of `mask`, the same in every turn) change at turn t + 1
  (synthetic scenes only)."""
  if not turn_modes or "compliance_revealed" not in per_mode[turn_modes[0]]:
    return
  from inpainting.metrics import compliance  # noqa: PLC0415

  for t in range(len(turn_modes) - 1):
    change = compliance.background_change(firsts[t], firsts[t + 1], mask)
    if change is not None:
      per_mode[turn_modes[t]]["background_change_to_next"] = change


def _per_turn(per_image: dict[str, dict[str, np.ndarray]], turn_modes, seed) -> list[dict]:
  """Per turn t (Neural Painter's questions, exact on synthetic scenes), bootstrap CIs of:

  compliance_revealed   the first sample right on every attribute told so far (t >= 1);
  {attr}_when_revealed / {attr}_when_unrevealed   an attribute's compliance over the
                        inputs that have / have not been told it;
  unrevealed_distinct   distinct values among the K samples per untold attribute (K > 1);
  consistency_to_next   of the told attributes the first sample got right at t, the share
                        still right at t + 1 (same seed, one more turn of text);
  background_change_to_next   mean change, in 8-bit levels, of the first sample's hole
                        pixels that no centre object can cover, from t to t + 1.
  """
  from inpainting.metrics import compliance, stats  # noqa: PLC0415

  def interval(values):
    return stats.bootstrap_ci(values, seed=seed).as_dict() if len(values) else None

  out = []
  for t, mode in enumerate(turn_modes):
    values = per_image.get(mode, {})
    if "compliance_revealed" not in values:
      return []  # Not synthetic scenes: no exact per-turn metrics.
    entry = {"turn": t, "compliance_all": interval(values["compliance_all"])}
    if t > 0:
      entry["compliance_revealed"] = interval(values["compliance_revealed"])
    if "unrevealed_distinct" in values and t < len(turn_modes) - 1:
      entry["unrevealed_distinct"] = interval(values["unrevealed_distinct"])
    for name in compliance.ATTRIBUTES:
      told = values[f"revealed_{name}"] == 1
      hits = values[f"compliance_{name}"]
      entry[f"{name}_when_revealed"] = interval(hits[told])
      entry[f"{name}_when_unrevealed"] = interval(hits[~told])
    if t + 1 < len(turn_modes):
      after = per_image[turn_modes[t + 1]]
      names = compliance.ATTRIBUTES
      right_now = np.stack(
        [(values[f"revealed_{n}"] == 1) & (values[f"compliance_{n}"] == 1) for n in names]
      )
      still = right_now & np.stack([after[f"compliance_{n}"] == 1 for n in names])
      counted = right_now.sum(0) > 0
      entry["consistency_to_next"] = interval(still.sum(0)[counted] / right_now.sum(0)[counted])
      if "background_change_to_next" in values:
        entry["background_change_to_next"] = interval(values["background_change_to_next"])
    out.append(entry)
  return out


def _chance(per_image) -> dict[str, float]:
  has_compliance = any("compliance_all" in m.get("true", {}) for m in per_image.values())
  if not has_compliance:
    return {}
  from inpainting.metrics import compliance  # noqa: PLC0415

  return compliance.chance_levels()


def _valid_threshold(per_image) -> float | None:
  """The RMS distance under which a sample counts as a valid object (synthetic scenes)."""
  if not any("valid_object_rate" in m.get("true", {}) for m in per_image.values()):
    return None
  from inpainting.metrics import compliance  # noqa: PLC0415

  return compliance.VALID_RMS_THRESHOLD


def _metric_vs_step(workdir, main_run, data, limit, scorer, seed, average) -> list[dict]:
  """Hole PSNR and LPIPS of the first sample at every kept checkpoint (a small subset)."""
  from inpainting import inference  # noqa: PLC0415

  curve = []
  for step in inference.checkpoint_steps(workdir):
    run = main_run if step == main_run.step else inference.load_run(workdir, step, average)
    values, _ = evaluate_method(
      lambda b, run=run: run.sample(b, 1, seed), data("true", limit), scorer
    )
    point = {"step": step, "psnr_hole": float(values["psnr_hole"].mean())}
    point["lpips"] = float(values["lpips"].mean())
    if "compliance_all" in values:
      point["compliance_all"] = float(values["compliance_all"].mean())
    curve.append(point)
  return curve


def _turn_strips(firsts, mask, truth, rows: int = 8) -> np.ndarray:
  """uint8 image: per input, the border (hole grey) | the first sample after each turn |
  the ground truth, for the first `rows` inputs."""
  from inpainting import images  # noqa: PLC0415

  count = min(rows, len(truth))
  border = truth[:count] * (1.0 - mask[:count])  # 0 is mid grey in [-1, 1].
  columns = [border, *(first[:count] for first in firsts), truth[:count]]
  strips = np.concatenate(columns, axis=2)  # [count, 64, 64 * columns, 3]
  return images.to_uint8(np.concatenate(list(strips), axis=0))


def _grid(run, data, num_samples, seed):
  batch = next(data("true", 8))
  return run.visualize(batch, run.sample(batch, num_samples, seed))


def _write_json(path: str, value) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, default=float)
  os.replace(tmp, path)


def _tensorboard(workdir: str, name: str, report: dict) -> None:
  from inpainting import logs  # noqa: PLC0415

  writer = logs.Writer(workdir)
  scalars = {}
  for method, modes in report["metrics"].items():
    for mode, metrics in modes.items():
      for metric, interval in metrics.items():
        scalars[f"evaluate/{name}/{method}/{mode}/{metric}"] = interval["mean"]
  for method, values in report["fid_kid"].items():
    for metric, value in values.items():
      scalars[f"evaluate/{name}/{method}/{metric}"] = value
  writer.scalars(report["checkpoint_step"], scalars)
  writer.close()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from inpainting.logs import quiet_libraries  # noqa: PLC0415

  quiet_libraries()
  from inpainting.errors import UserError  # noqa: PLC0415

  try:
    report = run_evaluation(
      FLAGS.workdir,
      split=FLAGS.split,
      data_dir=FLAGS.data_dir,
      num_samples=FLAGS.num_samples,
      max_examples=FLAGS.max_examples,
      batch_size=FLAGS.batch_size,
      compare=FLAGS.compare,
      fid=FLAGS.fid,
      feature_cache=FLAGS.feature_cache,
      curve_examples=FLAGS.curve_examples,
      seed=FLAGS.seed,
      heldout_wording=FLAGS.heldout_wording,
      average=FLAGS.average,
    )
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {report['out_dir']}/metrics.json and {report['out_dir']}/report.md")


if __name__ == "__main__":
  define_flags()
  app.run(main)
