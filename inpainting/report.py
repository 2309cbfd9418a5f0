"""report.md and its PNG plots, from the dict `evaluate.run_evaluation` builds."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from inpainting import images  # noqa: E402

TABLE_METRICS = (
  ("psnr_hole", "PSNR hole (dB) ↑"),
  ("psnr_hole_best_of_k", "PSNR hole best-of-K ↑"),
  ("ssim_hole", "SSIM hole ↑"),
  ("l1_hole", "L1 hole ↓"),
  ("mse", "L2 full ↓"),
  ("lpips", "LPIPS ↓"),
  ("lpips_best_of_k", "LPIPS best-of-K ↓"),
  ("diversity_lpips", "diversity (LPIPS) ↑"),
  ("compliance_shape", "shape ✓"),
  ("compliance_color", "colour ✓"),
  ("compliance_size", "size ✓"),
  ("compliance_all", "all three ✓"),
  ("obeys_caption_shape", "given shape ✓"),
  ("obeys_caption_color", "given colour ✓"),
  ("obeys_caption_size", "given size ✓"),
  ("obeys_caption_all", "given caption, all three ✓"),
  ("coverage_distinct_k", "distinct classes in K ↑"),
  ("valid_object_rate", "valid objects ↑"),
)
# The caption conditions, in the order of the report (reworded only with --heldout_wording).
CONDITIONS = (
  ("shuffled", "another image's caption"),
  ("empty", "no caption"),
  ("reworded", "held-out wording of the true caption"),
)
SYNTHETIC_NOTE = (
  "On synthetic scenes each sample is classified as the nearest of the 120 (shape, colour, "
  "size) centre objects in any pose of the generator's range. *✓* columns: the first "
  "sample's class against the scene's own caption; *given … ✓* (shuffled captions): "
  "against the caption the model was given, another image's; *distinct classes in K*: "
  "classes among the K samples of one input (1 = collapsed; with no caption a model "
  "should spread over the 120); *valid objects*: the fraction of samples within RMS "
  "{threshold} of their nearest candidate (over the scene's background, with or without its "
  "hidden film grain), i.e. a clean rendering of some object (calibrated on re-posed renders: "
  "see inpainting/metrics/compliance.py)."
)


def _cell(interval: dict | None) -> str:
  if interval is None:
    return "–"
  return f"{interval['mean']:.4g} [{interval['low']:.3g}, {interval['high']:.3g}]"


def _table(report: dict, mode: str) -> list[str]:
  metrics = report["metrics"]
  present = [
    (k, label) for k, label in TABLE_METRICS if any(k in m.get(mode, {}) for m in metrics.values())
  ]
  fid = report["fid_kid"]
  header = ["method", *[label for _, label in present]] + (["FID ↓", "KID ↓"] if fid else [])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for method, modes in metrics.items():
    if mode not in modes:
      continue
    row = [method, *[_cell(modes[mode].get(k)) for k, _ in present]]
    if fid:
      scores = fid.get(method) if mode == "true" else None
      row += [f"{scores['fid']:.2f}", f"{scores['kid']:.4f}"] if scores else ["–", "–"]
    lines.append("| " + " | ".join(row) + " |")
  return lines


def _caption_bars(report: dict, path: str) -> bool:
  effects = report["caption_effect"]
  rows = [
    (method, key, value)
    for method, values in effects.items()
    for key, value in values.items()
    if key.endswith("psnr_hole") or key.endswith("compliance_all") or key.endswith("lpips")
  ]
  if not rows:
    return False
  fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
  labels = [f"{m}: {k}" for m, k, _ in rows]
  means = [v["mean"] for _, _, v in rows]
  errors = [[v["mean"] - v["low"] for *_, v in rows], [v["high"] - v["mean"] for *_, v in rows]]
  ax.barh(range(len(rows)), means, xerr=errors, color="tab:blue", capsize=3)
  ax.axvline(0, color="black", linewidth=0.8)
  ax.set_yticks(range(len(rows)), labels, fontsize=8)
  ax.invert_yaxis()
  ax.set_title("Caption effect: true caption minus shuffled / empty (95% CI)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def _curve(report: dict, path: str) -> bool:
  curve = report["metric_vs_step"]
  if len(curve) < 2:
    return False
  names = [k for k in curve[0] if k != "step"]
  fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3))
  for ax, name in zip(axes, names):
    ax.plot([p["step"] for p in curve], [p[name] for p in curve], marker="o")
    ax.set_xlabel("training step")
    ax.set_title(name)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def _per_turn_lines(report: dict) -> list[str]:
  per_turn = report.get("per_turn") or []
  if not per_turn:
    return []
  columns = [
    ("compliance_revealed", "told attributes ✓"),
    ("shape_when_revealed", "shape ✓ (told)"),
    ("color_when_revealed", "colour ✓ (told)"),
    ("size_when_revealed", "size ✓ (told)"),
    ("unrevealed_distinct", "distinct values of untold attributes in K"),
    ("consistency_to_next", "still right after the next turn"),
    ("background_change_to_next", "background change at the next turn (levels)"),
    ("compliance_all", "all three ✓"),
  ]
  lines = [
    "## Turn by turn",
    "",
    "Row t: the text of the first t dialogue turns (as the run's text source reads them), "
    "the same sampling seed in every row. *told*: over the inputs whose first t turns "
    "named that attribute.",
    "",
    "| turn | " + " | ".join(label for _, label in columns) + " |",
    "|" + "---|" * (len(columns) + 1),
  ]
  for entry in per_turn:
    cells = [_cell(entry.get(key)) for key, _ in columns]
    lines.append(f"| {entry['turn']} | " + " | ".join(cells) + " |")
  return [*lines, ""]


def _per_turn_curves(report: dict, path: str) -> bool:
  per_turn = report.get("per_turn") or []
  if len(per_turn) < 2:
    return False
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for name, label in (("shape", "shape"), ("color", "colour"), ("size", "size")):
    points = [(e["turn"], e[f"{name}_when_revealed"]) for e in per_turn]
    points = [(t, v) for t, v in points if v is not None]
    turns = [t for t, _ in points]
    ax.errorbar(
      turns,
      [v["mean"] for _, v in points],
      yerr=[[v["mean"] - v["low"] for _, v in points], [v["high"] - v["mean"] for _, v in points]],
      marker="o",
      capsize=3,
      label=f"{label}, once told",
    )
  ax.plot(
    [e["turn"] for e in per_turn],
    [e["compliance_all"]["mean"] for e in per_turn],
    "k--",
    marker="s",
    label="all three",
  )
  ax.set_xlabel("dialogue turns read")
  ax.set_ylabel("compliance (first sample)")
  ax.set_ylim(-0.02, 1.02)
  ax.set_xticks([e["turn"] for e in per_turn])
  ax.legend(fontsize=8)
  ax.set_title("Shape vs colour vs size, by turn (95% CI)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def write(out_dir: str, report: dict, grid, turn_strips=None) -> str:
  """Writes report.md (and its PNGs) into `out_dir`; returns the report's path.
  `turn_strips` (uint8, optional): one row per input, one column per turn."""
  lines = [
    f"# Evaluation of {report['workdir']}",
    "",
    f"Split `{report['split']}`, checkpoint step {report['checkpoint_step']}, "
    f"{report['num_examples']} examples, K={report['num_samples']} samples per input. "
    "Each cell: mean [95% bootstrap interval]. Hole metrics are over the masked pixels; "
    "PSNR is capped at 100 dB; LPIPS uses AlexNet on the 64x64 composite.",
    "",
    "## With the true caption",
    "",
    *_table(report, "true"),
    "",
  ]
  if report.get("fid_note"):
    lines += [f"_{report['fid_note']}_", ""]
  for mode, title in CONDITIONS:
    if any(mode in modes for modes in report["metrics"].values()):
      lines += [f"## With {title} ({mode})", "", *_table(report, mode), ""]
  if report["chance"]:
    chance = ", ".join(f"{k} {v:.3f}" for k, v in report["chance"].items())
    lines += [f"Compliance chance levels (uniform guessing): {chance}.", ""]
    threshold = report.get("valid_rms_threshold")
    if threshold is not None:
      lines += [SYNTHETIC_NOTE.format(threshold=threshold), ""]
  lines += ["## How much does the caption help?", ""]
  lines += ["| method | difference | mean | 95% CI |", "|---|---|---|---|"]
  for method, values in report["caption_effect"].items():
    for key, value in values.items():
      lines.append(
        f"| {method} | {key} | {value['mean']:.4g} | [{value['low']:.3g}, {value['high']:.3g}] |"
      )
  lines.append("")
  if _caption_bars(report, os.path.join(out_dir, "caption_effect.png")):
    lines += ["![caption effect](caption_effect.png)", ""]
  lines += _per_turn_lines(report)
  if _per_turn_curves(report, os.path.join(out_dir, "per_turn.png")):
    lines += ["![per turn](per_turn.png)", ""]
  if turn_strips is not None:
    images.save_png(os.path.join(out_dir, "turn_samples.png"), turn_strips)
    lines += [
      "Turn by turn, first sample: border | after turn 0, 1, ... | ground truth",
      "",
      "![turn samples](turn_samples.png)",
      "",
    ]
  if _curve(report, os.path.join(out_dir, "metric_vs_step.png")):
    lines += ["## Metrics over training", "", "![metric vs step](metric_vs_step.png)", ""]
  if grid is not None:
    images.save_png(os.path.join(out_dir, "samples.png"), grid)
    lines += ["## Samples", "", "border | ground truth | K samples", "", "![samples](samples.png)"]
  path = os.path.join(out_dir, "report.md")
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(tmp, path)
  return path
