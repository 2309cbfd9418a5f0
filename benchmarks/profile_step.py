"""Where a train step's time goes: a jax.profiler trace, summarised per XLA op.

  python benchmarks/profile_step.py --config=configs/vaegan.py [--batch=64] [--steps=2]
      [--trace_dir=DIR] [--top=25]

Traces `--steps` compiled steps (after warm-up), then reads the trace back with
`jax.profiler.ProfileData` and joins each executed op with the compiled HLO: its output
shape, and for convolutions and dots their FLOPs and GFLOP/s. Prints time per op class
(conv, dot, other), then the ops that lose the most time against `--reference_gflops`.
The trace folder also opens in TensorBoard's profile plugin or Perfetto.
"""

from __future__ import annotations

import collections
import glob
import math
import os
import re
import sys
import tempfile

import jax
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step as bench_step  # noqa: E402  (sibling benchmark script)

# --config, --batch, --steps, --warmup and --vocab_size come from train_step.py.
FLAGS = flags.FLAGS
flags.DEFINE_string("trace_dir", None, "Where to write the trace (default: a temp folder).")
flags.DEFINE_integer("top", 25, "Ops listed.")
flags.DEFINE_float("reference_gflops", 150.0, "Rate against which lost time is counted.")

_WRAPPERS = ("ThunkExecutor", "$", "SlinkyThreadPool", "PjitFunction")


def _dims(shape: str) -> list[int]:
  match = re.search(r"\[([\d,]*)\]", shape)
  return [int(v) for v in match.group(1).split(",") if v] if match else []


def _instruction(hlo: str, name: str) -> re.Match | None:
  return re.search(r"\n\s*%" + re.escape(name) + r" = (\S+) ([^\n]*)", hlo)


def op_flops(hlo: str, name: str) -> tuple[str, float, str]:
  """(kind, FLOPs, output shape) of the op called `name` in the compiled HLO text."""
  instruction = _instruction(hlo, name)
  if instruction is None:
    return "other", 0.0, "?"
  called = re.search(r"calls=%([\w.\-]+)", instruction.group(2))
  body = instruction.group(0)
  if called:
    computation = re.search(r"\n%" + re.escape(called.group(1)) + r" [^{]*\{(.*?)\n\}", hlo, re.S)
    body = computation.group(1) if computation else body
  for line in body.split("\n"):
    op = re.search(r"= (\S+) (convolution|dot)\(%([\w.\-]+), %([\w.\-]+)\), (.*)", line.strip())
    if not op:
      continue
    operands = []
    for operand in (op.group(3), op.group(4)):
      found = re.search(r"%" + re.escape(operand) + r" = (\S+)", body) or _instruction(hlo, operand)
      operands.append(_dims(found.group(1)) if found else [])
    out = math.prod(_dims(op.group(1)))
    if op.group(2) == "dot":
      contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", op.group(5)).group(1)
      depth = math.prod(operands[0][int(d)] for d in contracting.split(",") if d)
      return "dot", 2.0 * out * depth, instruction.group(1)
    window = re.search(r"size=([\dx]+)", op.group(5))
    labels = re.search(r"dim_labels=\w+_(\w+)->", op.group(5)).group(1)
    in_features = operands[1][labels.index("i")]
    taps = math.prod(int(v) for v in window.group(1).split("x")) if window else 1
    return "conv", 2.0 * out * taps * in_features, instruction.group(1)
  return "other", 0.0, instruction.group(1)


def summarise(trace_file: str, hlo: str, steps: int) -> None:
  totals = collections.Counter()
  for plane in jax.profiler.ProfileData.from_file(trace_file).planes:
    for line in plane.lines:
      for event in line.events:
        if not event.name.startswith(_WRAPPERS):
          totals[event.name] += event.duration_ns / steps
  rows = [(ns / 1e9, *op_flops(hlo, name), name) for name, ns in totals.items()]
  rows = [row for row in rows if row[3] != "?"]
  total = sum(row[0] for row in rows)
  print(f"op time per step (summed over threads): {total * 1e3:.0f} ms")
  for kind in ("conv", "dot", "other"):
    seconds = sum(r[0] for r in rows if r[1] == kind)
    flops = sum(r[2] for r in rows if r[1] == kind)
    rate = flops / seconds / 1e9 if seconds else 0.0
    print(
      f"  {kind:5s} {seconds * 1e3:7.0f} ms {100 * seconds / total:5.1f}%  "
      f"{flops / 1e9:7.1f} GFLOP  {rate:6.1f} GFLOP/s"
    )
  by_class = collections.Counter()
  for seconds, kind, _, _, name in rows:
    if kind == "other":
      by_class[re.sub(r"[.\d]+$", "", name)] += seconds
  print(
    "  other, by fusion kind: "
    + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in by_class.most_common(6))
  )
  reference = FLAGS.reference_gflops * 1e9
  print(f"ops losing most time against {FLAGS.reference_gflops:.0f} GFLOP/s:")
  for seconds, kind, flops, shape, name in sorted(rows, key=lambda r: r[2] / reference - r[0])[
    : FLAGS.top
  ]:
    rate = f"{flops / seconds / 1e9:6.1f} GFLOP/s" if flops else ""
    print(f"  {seconds * 1e3:7.1f} ms  {kind:5s} {name:30s} {shape:32s} {rate}")


def main(argv):
  del argv
  trace_dir = FLAGS.trace_dir or tempfile.mkdtemp(prefix="profile_step_")
  compiled = bench_step.compile_step(FLAGS.config, FLAGS.batch, FLAGS.vocab_size)
  bench_step.time_steps(compiled, 0, FLAGS.warmup)
  jax.profiler.start_trace(trace_dir)
  times = bench_step.time_steps(compiled, FLAGS.steps, 0)
  jax.profiler.stop_trace()
  print(
    f"{FLAGS.config.model.name}: traced {len(times)} steps, {sum(times) / len(times) * 1e3:.0f} ms/step"
  )
  trace_file = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
  summarise(trace_file, compiled.step_fn.as_text(), len(times))
  print(f"trace: {trace_dir}")


if __name__ == "__main__":
  app.run(main)
