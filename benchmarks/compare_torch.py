"""Our pix2pix train step against the same step in PyTorch, interleaved A B A B.

  pip install torch  # CPU wheel (or a CUDA one on a GPU host); not a project dependency
  python benchmarks/compare_torch.py [--pairs=3] [--batch=64] [--steps=10]

Each run is its own process (`benchmarks/train_step.py --config=configs/pix2pix.py` and
`benchmarks/pix2pix_torch.py`), so neither inherits the other's threads, caches or
allocator. A shared machine drifts by tens of percent from minute to minute; a pair's
ratio compares two runs taken back to back, and the median over pairs is the figure to
quote. Prints one line per pair, then the median ratio with its min and max; the last
line is JSON with `ratio_median` (ours / PyTorch in images/s, > 1 means we are faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def commands(args) -> dict[str, list[str]]:
  common = [f"--batch={args.batch}", f"--steps={args.steps}", f"--warmup={args.warmup}"]
  ours = [sys.executable, os.path.join(HERE, "train_step.py"), f"--config={args.config}"]
  torch_step = [
    sys.executable,
    os.path.join(HERE, "pix2pix_torch.py"),
    f"--device={args.torch_device}",
  ]
  return {"ours": ours + common, "torch": torch_step + common}


def run_once(command: list[str]) -> dict:
  """Runs one benchmark process; returns its last-line JSON (exits on failure)."""
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  lines = result.stdout.strip().splitlines()
  if result.returncode != 0 or not lines:
    tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
    sys.exit(f"benchmark failed ({' '.join(command[1:3])}): " + " | ".join(tail))
  return json.loads(lines[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pairs", type=int, default=3, help="A B pairs (at least 3)")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
  parser.add_argument("--config", default="configs/pix2pix.py", help="our side's config")
  parser.add_argument("--torch_device", default="cpu", help="cpu | cuda (on a GPU host)")
  args = parser.parse_args()
  if args.pairs < 3:
    sys.exit("--pairs must be at least 3: one pair cannot tell drift from a difference")
  try:
    import torch  # noqa: F401
  except ImportError:
    sys.exit("PyTorch is not installed: pip install torch (the CPU wheel is enough)")

  runs = commands(args)
  pairs = []
  for index in range(args.pairs):
    pair = {}
    for side in ("ours", "torch"):  # A then B, every pair.
      start = time.time()
      result = run_once(runs[side])
      pair[side] = result["images_per_second"]
      pair[side + "_wall_seconds"] = round(time.time() - start, 1)
    pair["ratio"] = pair["ours"] / pair["torch"]
    pairs.append(pair)
    print(
      f"pair {index + 1}: ours {pair['ours']:.2f} img/s, PyTorch {pair['torch']:.2f} img/s, "
      f"ratio {pair['ratio']:.3f}",
      flush=True,
    )
  ratios = [p["ratio"] for p in pairs]
  summary = {
    "benchmark": "pix2pix train step, ours / PyTorch, interleaved",
    "batch": args.batch,
    "steps_per_run": args.steps,
    "pairs": pairs,
    "ratio_median": statistics.median(ratios),
    "ratio_min": min(ratios),
    "ratio_max": max(ratios),
    "ours_median_images_per_second": statistics.median(p["ours"] for p in pairs),
    "torch_median_images_per_second": statistics.median(p["torch"] for p in pairs),
    "date": time.strftime("%Y-%m-%d %H:%M"),
    "load_average_at_end": os.getloadavg()[0],
  }
  print(
    f"median ratio {summary['ratio_median']:.3f} (min {summary['ratio_min']:.3f}, "
    f"max {summary['ratio_max']:.3f}) over {len(pairs)} pairs"
  )
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
