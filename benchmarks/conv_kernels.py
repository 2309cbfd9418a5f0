"""Times every formulation of the 4x4 stride-2 conv maps on pix2pix's shapes.

  python benchmarks/conv_kernels.py [--batch=64] [--repeats=5]

For each (input size, C, A) of a model's 4x4 stride-2 layers (--shapes), and for each of
down / up / grad_w (inpainting/models/strided_conv.py), prints the median milliseconds of
every exact formulation and its GFLOP/s; the last line is JSON. This is the measurement
behind `strided_conv.choose()`.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from inpainting.models import strided_conv as sc

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 64, "Batch size.")
flags.DEFINE_integer("repeats", 5, "Timed calls per formulation (median reported).")

# (input side 2H, C, A) as the down map's shapes. pix2pix: generator down convs, generator
# up convs (as the adjoint's down shapes), PatchGAN. vaegan: its discriminator.
SHAPES = {}
SHAPES["pix2pix"] = [
  (64, 4, 64),
  (32, 64, 128),
  (16, 128, 256),
  (8, 256, 512),
  (4, 512, 512),
  (2, 512, 512),
  (4, 512, 1024),
  (8, 256, 1024),
  (16, 128, 512),
  (32, 64, 256),
  (64, 3, 128),
  (64, 7, 64),
]
SHAPES["vaegan"] = [(64, 4, 32), (32, 32, 64), (16, 64, 128)]
flags.DEFINE_enum("shapes", "pix2pix", list(SHAPES), "Which model's layer shapes.")


def _median_ms(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  rows = []
  for size, c, a in SHAPES[FLAGS.shapes]:
    half = size // 2
    x = jnp.asarray(rng.normal(size=(FLAGS.batch, size, size, c)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(FLAGS.batch, half, half, a)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 4, c, a)) * 0.05, jnp.float32)
    gflop = 2 * FLAGS.batch * half * half * 16 * c * a / 1e9
    for op, table, args in (
      ("down", sc.DOWN, (x, w)),
      ("up", sc.UP, (y, w)),
      ("grad_w", sc.GRAD_W, (x, y)),
    ):
      reference = jax.jit(table["direct"])(*args)
      timings = {}
      for name, fn in table.items():
        jitted = jax.jit(fn)
        error = float(jnp.max(jnp.abs(jitted(*args) - reference)))
        scale = float(jnp.max(jnp.abs(reference)))
        if error > 1e-4 * scale:
          raise SystemExit(f"error: {op}/{name} differs from direct by {error} at {size, c, a}")
        timings[name] = _median_ms(jitted, *args)
      best = min(timings, key=timings.get)
      rows.append(dict(shape=[size, c, a], op=op, gflop=gflop, ms=timings, best=best))
      cells = "  ".join(
        f"{n} {t:7.1f} ms ({gflop / t * 1e3:5.0f} GF/s)" for n, t in timings.items()
      )
      print(f"{size:3d}px {c:4d}->{a:<5d} {op:7s} {cells}   best: {best}", flush=True)
  print(
    json.dumps({"batch": FLAGS.batch, "device_kind": jax.devices()[0].device_kind, "rows": rows})
  )


if __name__ == "__main__":
  app.run(main)
