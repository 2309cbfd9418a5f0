"""Train-step throughput and MFU of one config, on whatever devices JAX sees.

  python benchmarks/train_step.py --config=configs/pix2pix.py [--batch=64] [--steps=10]

Uses the trainer's own pieces (state creation, the pure step, the mesh), fed with a fixed
random batch so that only the step is timed. The last line printed is a JSON object:
parameter counts, XLA's FLOPs per step, the median step time, images/s, the peak of a large
matmul measured in the same run (f32 through XLA and, on CPU, NumPy's BLAS; bf16 when the
config computes in bf16), MFU of the model's FLOPs against it, the device kind and peak
memory where the backend reports it.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from inpainting import run, sharding, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Model config.", lock_config=False)
flags.DEFINE_integer("batch", 64, "Global batch size.")
flags.DEFINE_integer("steps", 10, "Timed steps (after warm-up).")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_integer("vocab_size", 512, "Caption vocabulary size of the synthetic batch.")
flags.DEFINE_integer("peak_matmul_size", 4096, "Side of the square matmul that measures peak.")
flags.mark_flag_as_required("config")


def matmul_peak(dtype, size: int = 4096, repeats: int = 5) -> float:
  """Median FLOP/s of a large square matmul on the first mesh device set."""
  a = jnp.ones((size, size), dtype)
  b = jnp.ones((size, size), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    f(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * size**3 / statistics.median(times) * jax.local_device_count()


def random_batch(batch_size: int, length: int, vocab_size: int, mesh) -> dict[str, jax.Array]:
  rng = np.random.default_rng(0)
  mask = np.zeros((batch_size, 64, 64, 1), np.float32)
  mask[:, 16:48, 16:48] = 1.0
  tokens = rng.integers(4, vocab_size, (batch_size, length)).astype(np.int32)
  local = {
    "image": rng.uniform(-1, 1, (batch_size, 64, 64, 3)).astype(np.float32),
    "mask": mask,
    "tokens": tokens,
    "token_mask": np.ones_like(tokens, bool),
  }
  return sharding.global_batch(local, mesh, tuple(local))


def numpy_matmul_peak(size: int = 4096, repeats: int = 5) -> float:
  """Median FLOP/s of the same matmul through NumPy's BLAS (the host's best f32 GEMM)."""
  a = np.ones((size, size), np.float32)
  a @ a
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    a @ a
    times.append(time.perf_counter() - start)
  return 2 * size**3 / statistics.median(times)


@dataclasses.dataclass
class CompiledStep:
  """A compiled, donated train step with a state and a fixed batch to feed it."""

  step_fn: Any
  state: Any
  batch: dict[str, jax.Array]
  params: dict[str, int]
  compile_seconds: float
  compiled_flops: float
  lowered_flops: float


def compile_step(config, batch_size: int, vocab_size: int) -> CompiledStep:
  """Builds the trainer's state and step exactly as train.py does, for a random batch."""
  config.global_batch_size = batch_size
  config.model.vocab_size = vocab_size
  mesh = sharding.make_mesh(config.mesh, batch_size)
  graphdef, state, state_shardings = train.create_state(config, mesh)
  params = train.count_params(graphdef, state)
  batch = random_batch(batch_size, config.data.max_caption_length, vocab_size, mesh)
  replicated = sharding.replicated(mesh)
  compile_start = time.perf_counter()
  lowered = jax.jit(
    train.make_train_step(config, graphdef),
    in_shardings=(state_shardings, sharding.batch_sharding(mesh), replicated),
    out_shardings=(state_shardings, replicated),
    donate_argnums=0,
  ).lower(state, batch, jax.ShapeDtypeStruct((), jnp.int32))
  step_fn = lowered.compile()
  compile_seconds = time.perf_counter() - compile_start
  return CompiledStep(
    step_fn=step_fn,
    state=state,
    batch=batch,
    params=params,
    compile_seconds=compile_seconds,
    compiled_flops=train._flops(step_fn),  # noqa: SLF001  (the trainer's own FLOP reader)
    lowered_flops=train._flops(lowered),  # noqa: SLF001
  )


def model_flops(config, compiled: CompiledStep) -> float:
  """FLOPs of the model's maths, independent of how the step computes it.

  XLA:GPU's compiled cost analysis misses convolutions lowered to cuDNN calls, so this is
  the larger of the compiled and the lowered count. Where the config chooses how its strided
  convs are computed (`model.conv_impl`), the count comes from the program written with
  XLA's own conv forms, so that padding or im2col overheads do not inflate MFU.
  """
  if config.model.get("conv_impl") in (None, "xla"):
    return max(compiled.compiled_flops, compiled.lowered_flops)
  reference = config.copy_and_resolve_references()
  reference.model.conv_impl = "xla"
  graphdef, _ = run.abstract_bundle(reference)  # Same state layout; only the maths differs.
  state, batch = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), (compiled.state, compiled.batch)
  )
  lowered = jax.jit(train.make_train_step(reference, graphdef)).lower(
    state, batch, jax.ShapeDtypeStruct((), jnp.int32)
  )
  return train._flops(lowered)  # noqa: SLF001


def run_step(compiled: CompiledStep, index: int) -> float:
  """Runs one step to completion (the new state replaces the donated one); its seconds."""
  start = time.perf_counter()
  compiled.state, metrics = compiled.step_fn(compiled.state, compiled.batch, jnp.int32(index))
  jax.block_until_ready((compiled.state, metrics))
  return time.perf_counter() - start


def time_steps(compiled: CompiledStep, steps: int, warmup: int) -> list[float]:
  """Seconds of each of `steps` steps after `warmup` untimed ones (state is carried on)."""
  times = [run_step(compiled, i) for i in range(warmup + steps)]
  return times[warmup:]


def benchmark(config, batch_size: int, steps: int, warmup: int, vocab_size: int) -> dict:
  compiled = compile_step(config, batch_size, vocab_size)
  flops = model_flops(config, compiled)
  times = time_steps(compiled, steps, warmup)
  step_time = statistics.median(times)

  result = {
    "config": config.model.name,
    "device_kind": jax.devices()[0].device_kind,
    "num_devices": jax.device_count(),
    "batch": batch_size,
    "compute_dtype": config.model.get("dtype", "float32"),
    "conv_impl": config.model.get("conv_impl"),  # None: the config has no such choice.
    "params": compiled.params,
    "gflops_per_step": flops / 1e9,
    "gflops_per_step_compiled": compiled.compiled_flops / 1e9,
    "gflops_per_step_lowered": compiled.lowered_flops / 1e9,
    "compile_seconds": round(compiled.compile_seconds, 2),
    "median_step_seconds": step_time,
    "step_seconds_min_max": [min(times), max(times)],
    "images_per_second": batch_size / step_time,
    "achieved_gflops_per_second": flops / step_time / 1e9,
  }
  # The peak is the best large f32 matmul this host runs: XLA's, and on CPU also NumPy's
  # BLAS, which is faster than XLA:CPU here (MFU against XLA's alone would flatter).
  peak_xla = matmul_peak(jnp.float32, FLAGS.peak_matmul_size)
  result["peak_f32_xla_gflops_per_second"] = peak_xla / 1e9
  peak_f32 = peak_xla
  if jax.default_backend() == "cpu":
    peak_numpy = numpy_matmul_peak(FLAGS.peak_matmul_size) * jax.local_device_count()
    result["peak_f32_numpy_gflops_per_second"] = peak_numpy / 1e9
    peak_f32 = max(peak_xla, peak_numpy)
  result["peak_f32_gflops_per_second"] = peak_f32 / 1e9
  result["mfu_vs_f32_peak"] = flops / step_time / peak_f32
  if result["compute_dtype"] == "bfloat16":
    peak_bf16 = matmul_peak(jnp.bfloat16, FLAGS.peak_matmul_size)
    result["peak_bf16_gflops_per_second"] = peak_bf16 / 1e9
    result["mfu_vs_bf16_peak"] = flops / step_time / peak_bf16
  memory = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in memory:
    result["peak_memory_gib"] = memory["peak_bytes_in_use"] / 2**30
  return result


def main(argv):
  del argv
  result = benchmark(FLAGS.config, FLAGS.batch, FLAGS.steps, FLAGS.warmup, FLAGS.vocab_size)
  print(
    f"{result['config']}: {result['images_per_second']:.1f} img/s, "
    f"{result['median_step_seconds'] * 1e3:.1f} ms/step, "
    f"{result['achieved_gflops_per_second']:.0f} GFLOP/s, "
    f"MFU {100 * result['mfu_vs_f32_peak']:.1f}% of f32 matmul peak"
  )
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
