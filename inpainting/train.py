"""The training loop: `train_and_evaluate(config, workdir)`.

One readable loop. Everything model-specific comes from the model family in
`inpainting/models/` (see registry.py); everything about devices from sharding.py; every
byte on disk from checkpointing.py; every report from logs.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from inpainting import checkpointing, images, input_pipeline, logs, masks, records, sharding
from inpainting.errors import UserError
from inpainting.models import layers, registry, strided_conv
from inpainting.tokenizer import Tokenizer

CONFIG_FILE = "config.json"


# --- Data --------------------------------------------------------------------------------


def resolve_data_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Returns the prepared dataset folder, preparing synthetic scenes on first use."""
  if config.data.dir:
    data_dir = os.path.abspath(os.path.expanduser(config.data.dir))
    if not os.path.isfile(os.path.join(data_dir, records.METADATA_FILE)):
      raise UserError(
        f"config.data.dir={config.data.dir} is not a prepared dataset "
        f"(run `python -m data_prep.prepare` first)"
      )
    return data_dir
  data_dir = os.path.join(workdir, "data")
  if jax.process_index() == 0 and not os.path.isfile(os.path.join(data_dir, records.METADATA_FILE)):
    from data_prep import prepare  # noqa: PLC0415  (only needed once per workdir)

    logs.console(f"no data.dir given: preparing synthetic scenes into {data_dir}")
    prepare.prepare(
      "synthetic",
      "",
      data_dir,
      num_train=config.data.synthetic_num_train,
      num_validation=config.data.synthetic_num_validation,
      vocab_size=config.data.vocab_size,
      seed=config.seed,
    )
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("synthetic data prepared")
  return data_dir


def finalize_config(config: ml_collections.ConfigDict, data_dir: str) -> ml_collections.ConfigDict:
  """Fills the values that come from the data (vocab size, data folder)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.dir = data_dir
  config.model.vocab_size = Tokenizer(os.path.join(data_dir, records.TOKENIZER_FILE)).vocab_size
  return config


def make_datasets(config, data_dir: str):
  """Training iterator (infinite, shuffled) and a function giving fresh validation ones."""
  local_batch_size = config.global_batch_size // jax.process_count()
  common = dict(
    seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count()
  )
  try:
    train_ds = input_pipeline.create_dataset(
      data_dir, "train", config.data, local_batch_size, train=True, **common
    )
  except ValueError as error:  # Bad mask, caption mode or data folder: the user's to fix.
    raise UserError(str(error)) from None

  def validation(caption_mode: str = "first"):
    ds = input_pipeline.create_dataset(
      data_dir,
      "validation",
      config.data,
      local_batch_size,
      train=False,
      caption_mode=caption_mode,
      **common,
    )
    return iter(ds)

  return iter(train_ds), validation


# --- State ---------------------------------------------------------------------------------


def abstract_bundle(config) -> tuple[nnx.GraphDef, Any]:
  """Graph definition and ShapeDtypeStructs of the model bundle; allocates nothing."""
  family = registry.get(config.model.name)
  bundle = nnx.eval_shape(lambda: family.create(config, nnx.Rngs(config.seed)))
  return nnx.split(bundle)


def create_state(config, mesh):
  """Builds the sharded train state directly on the devices.

  Returns:
    (graphdef, state, state_shardings) where state = {"model": nnx.State, "rng": key}.
  """
  family = registry.get(config.model.name)
  graphdef, abstract_model = abstract_bundle(config)
  abstract_state = {
    "model": abstract_model,
    "rng": jax.ShapeDtypeStruct((2,), jnp.uint32),
  }
  shardings = sharding.state_shardings(abstract_state, mesh)
  shardings["rng"] = sharding.replicated(mesh)

  def init():
    model = nnx.state(family.create(config, nnx.Rngs(config.seed)))
    return {"model": model, "rng": jax.random.PRNGKey(config.seed)}

  state = jax.jit(init, out_shardings=shardings)()
  return graphdef, state, shardings


def count_params(graphdef, state) -> dict[str, int]:
  """Trainable parameters per top-level part of the bundle (optimizers excluded)."""
  bundle = nnx.merge(graphdef, state["model"])
  counts = {}
  for name, value in vars(bundle).items():
    if isinstance(value, nnx.Module) and not isinstance(value, nnx.Optimizer):
      leaves = jax.tree.leaves(nnx.state(value, nnx.Param))
      counts[name] = int(sum(np.prod(x.shape) for x in leaves))
  return counts


# --- Steps -----------------------------------------------------------------------------------


def make_train_step(config, graphdef):
  """Pure step: (state, batch, step) -> (state, metrics). D then G, inside the family."""
  family = registry.get(config.model.name)
  nan_step = config.debug.inject_nan_at_step

  def train_step(state, batch, step):
    bundle = nnx.merge(graphdef, state["model"])
    rng = jax.random.fold_in(state["rng"], step)
    metrics = family.train_step(bundle, batch, rng, config)
    if nan_step >= 0:  # Debug only: proves the NaN stop works.
      poison = jnp.where(step + 1 == nan_step, jnp.nan, 1.0)
      metrics = {k: v * poison for k, v in metrics.items()}
    return {"model": nnx.state(bundle), "rng": state["rng"]}, metrics

  return train_step


def make_sample_fn(config, graphdef, num_samples: int):
  family = registry.get(config.model.name)

  def sample(state, batch, rng):
    bundle = nnx.merge(graphdef, state["model"])
    return family.sample(bundle, batch, rng, num_samples)

  return sample


def make_eval_fn(config, graphdef):
  family = registry.get(config.model.name)

  def evaluate(state, batch, rng):
    if family.eval_losses is None:
      return {}
    bundle = nnx.merge(graphdef, state["model"])
    return family.eval_losses(bundle, batch, rng)

  return evaluate


def check_finite(step: int, metrics: dict[str, float]) -> None:
  """Raises FloatingPointError naming the step and the first bad metric."""
  for name, value in metrics.items():
    if not np.isfinite(value):
      raise FloatingPointError(
        f"step {step}: {name} is {value}; stopping (last good checkpoint kept)"
      )


# --- Evaluation during training --------------------------------------------------------------


def light_evaluation(config, mesh, state, validation, eval_fn, sample_fn, step, writer, workdir):
  """Validation losses, hole PSNR and a sample grid (border | truth | K samples)."""
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), step)
  totals: dict[str, list[float]] = {}
  iterator = validation()
  grid_batch = None
  for index in range(config.num_eval_batches):
    local = next(iterator, None)
    if local is None or len(local["image"]) * jax.process_count() != config.global_batch_size:
      break
    batch = sharding.global_batch(local, mesh)
    if grid_batch is None:
      grid_batch = batch
    values = jax.device_get(eval_fn(state, batch, jax.random.fold_in(rng, index)))
    for name, value in values.items():
      totals.setdefault(f"eval/{name}", []).append(float(value))
  scalars = {name: float(np.mean(v)) for name, v in totals.items()}
  if grid_batch is not None:
    samples = sample_fn(state, grid_batch, rng)  # [K, B, H, W, 3]
    samples = multihost_utils.process_allgather(samples, tiled=True)
    truth = multihost_utils.process_allgather(grid_batch["image"], tiled=True)
    mask = multihost_utils.process_allgather(grid_batch["mask"], tiled=True)
    hole = mask.sum(axis=(1, 2, 3)) * 3
    mse = (((samples - truth[None]) ** 2) * mask[None]).sum(axis=(2, 3, 4)) / hole
    scalars["eval/psnr_hole_first_sample"] = float(np.mean(10 * np.log10(4.0 / mse[0])))
    n = config.num_grid_examples
    masked = truth[:n] * (1 - mask[:n])  # The hole shows as mid-grey (0).
    grid = logs.sample_grid(masked, truth[:n], samples[:, :n])
    writer.image(step, "samples", grid)
    if jax.process_index() == 0:
      os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
      images.save_png(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid)
  writer.scalars(step, scalars)
  return scalars


# --- The loop --------------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.model.name`, resuming from `workdir` if it holds a checkpoint.

  Returns:
    The last logged metrics (host floats), for tests and scripts.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  # Config mistakes -> one-line errors before any work.
  registry.get(config.model.name)
  try:
    masks.parse(config.data.mask)
    layers.compute_dtype(config.model)
    strided_conv.conv_impl(config.model)
  except ValueError as error:
    raise UserError(str(error)) from None

  # Data first: it fixes the vocabulary size the model needs.
  data_dir = resolve_data_dir(config, workdir)
  config = finalize_config(config, data_dir)
  if jax.process_index() == 0:  # The run is self-describing: config and tokenizer.
    with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
      f.write(config.to_json(indent=2))
    shutil.copyfile(
      os.path.join(data_dir, records.TOKENIZER_FILE), os.path.join(workdir, records.TOKENIZER_FILE)
    )
  mesh = sharding.make_mesh(config.mesh, config.global_batch_size)
  train_iter, validation = make_datasets(config, data_dir)
  data_state = checkpointing.DataIteratorState(train_iter)

  # State: created sharded on the devices, or restored from the latest checkpoint.
  graphdef, state, state_shardings = create_state(config, mesh)
  params = count_params(graphdef, state)
  logs.console(f"parameters: {params} on mesh {dict(mesh.shape)}")
  checkpointer = checkpointing.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    save_every_steps=config.checkpoint_every_steps,
    keep=config.keep_checkpoints,
  )
  first_step = 0
  latest = checkpointer.latest_step()
  if latest is not None:
    abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_shardings
    )
    del state
    state = checkpointer.restore(latest, abstract, data_state)
    first_step = latest
    logs.console(f"resumed from step {latest}")

  # Compile ahead of time (errors surface before the loop, FLOPs are known up front).
  batch_sharding = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  first_batch = next(train_iter)
  data_state.state = train_iter.get_state()
  abstract_batch = {
    k: jax.ShapeDtypeStruct(
      (config.global_batch_size, *np.shape(first_batch[k])[1:]),
      np.asarray(first_batch[k]).dtype,
      sharding=batch_sharding,
    )
    for k in sharding.DEVICE_KEYS
  }
  train_step = (
    jax.jit(
      make_train_step(config, graphdef),
      in_shardings=(state_shardings, batch_sharding, replicated),
      out_shardings=(state_shardings, replicated),
      donate_argnums=0,
    )
    .lower(state, abstract_batch, jax.ShapeDtypeStruct((), jnp.int32))
    .compile()
  )
  flops = _flops(train_step)
  sample_fn = jax.jit(make_sample_fn(config, graphdef, config.num_grid_samples))
  eval_fn = jax.jit(make_eval_fn(config, graphdef))

  writer = logs.Writer(os.path.join(workdir, "tensorboard"))
  if first_step == 0:
    writer.scalars(0, {f"params/{k}": v for k, v in params.items()})
  progress = logs.Progress(config.num_train_steps, config.global_batch_size, first_step)
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  last_metrics: dict[str, float] = {}

  def flush_metrics(step: int) -> dict[str, float]:
    """Fetches the metrics of the steps since the last flush; stops on NaN/Inf."""
    host = jax.device_get(pending)
    pending.clear()
    for s, values in host:
      check_finite(s, {k: float(v) for k, v in values.items()})
    return {k: float(v) for k, v in host[-1][1].items()} if host else {}

  logs.console(
    f"training {config.model.name} from step {first_step} to {config.num_train_steps}"
    + (f" ({flops / 1e9:.1f} GFLOP/step)" if flops else "")
  )
  step = first_step
  local_batch = first_batch
  ids_file = None
  if config.debug.record_example_ids:
    os.makedirs(os.path.join(workdir, "debug"), exist_ok=True)
    ids_path = os.path.join(workdir, "debug", f"example_ids_process_{jax.process_index()}.txt")
    ids_file = open(ids_path, "a", encoding="utf-8")  # noqa: SIM115
  try:
    while step < config.num_train_steps:
      # --- One step (asynchronous dispatch; the next batch loads meanwhile). ---
      batch = sharding.global_batch(local_batch, mesh)
      if ids_file is not None:
        ids_file.write(f"{step + 1}\t" + " ".join(map(str, local_batch["id"])) + "\n")
      state, metrics = train_step(state, batch, jnp.int32(step))
      step += 1
      pending.append((step, metrics))
      done = step == config.num_train_steps
      stop = checkpointer.should_stop(step)

      # --- Logging (and the NaN check) ---
      will_save = done or stop or checkpointer.should_save(step)
      if step % config.log_every_steps == 0 or will_save:
        last_metrics = flush_metrics(step)
      if step % config.log_every_steps == 0 or done:
        perf = progress.update(step)
        if flops:
          perf["perf/gflops_per_second"] = flops / perf["perf/step_time_s"] / 1e9
        writer.scalars(step, {**last_metrics, **perf})
        logs.console(progress.line(step, perf, last_metrics))

      # --- Checkpoint (async); its data state is the one after this step's batch. ---
      if will_save:
        checkpointer.save(step, state, data_state, force=done or stop)
      if stop:
        logs.console(f"stop requested (SIGTERM/preemption): saved step {step}, exiting")
        break

      # --- Light evaluation and sample grid ---
      if step % config.eval_every_steps == 0 or done:
        scalars = light_evaluation(
          config, mesh, state, validation, eval_fn, sample_fn, step, writer, workdir
        )
        logs.console(
          f"eval at step {step}: " + json.dumps({k: round(v, 4) for k, v in scalars.items()})
        )
        last_metrics.update(scalars)
        progress.update(step)  # Evaluation time does not count as training time.

      if not done:
        local_batch = next(train_iter)
        data_state.state = train_iter.get_state()
  finally:
    checkpointer.close()
    writer.close()
    if ids_file is not None:
      ids_file.close()
  logging.info(
    "final state sha256 (process %d): %s", jax.process_index(), params_fingerprint(state)
  )
  return last_metrics


def params_fingerprint(state) -> str:
  """SHA-256 over this process's copy of every array of the state (replicated arrays)."""
  digest = hashlib.sha256()
  flat, _ = checkpointing.flatten(state)
  for name in sorted(flat):
    digest.update(name.encode())
    digest.update(np.asarray(flat[name].addressable_data(0)).tobytes())
  return digest.hexdigest()


def _flops(compiled) -> float:
  """XLA's FLOP count of a compiled (or lowered) step; cost_analysis is a dict or a list."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001  (not every backend reports costs)
    return 0.0
  if isinstance(cost, list | tuple):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))
