"""The training loop: `train_and_evaluate(config, workdir)`.

One readable loop that knows no task. Everything model-specific comes from the model
family (inpainting/models/registry.py): its config check, batch fields, train step,
light evaluation, picture and console metrics. Devices come from sharding.py, every byte
on disk from run.py and checkpointing.py, every report from logs.py.
"""

from __future__ import annotations

import hashlib
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from inpainting import (
  batching,
  checkpointing,
  images,
  input_pipeline,
  logs,
  masks,
  records,
  run,
  sharding,
)
from inpainting.errors import UserError
from inpainting.models import registry

# --- Data --------------------------------------------------------------------------------


def make_datasets(config, family: registry.Family):
  """Training iterator (infinite, shuffled) and a function giving fresh validation ones."""
  local_batch_size = config.global_batch_size // jax.process_count()
  common = dict(
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    spec=family.batch,
    tokenizer_path=run.tokenizer_source(config),
  )
  try:
    train_ds = input_pipeline.create_dataset(
      config.data.dir, "train", config.data, local_batch_size, train=True, **common
    )
  except ValueError as error:  # Bad mask, caption mode or data folder: the user's to fix.
    raise UserError(str(error)) from None

  def validation():
    ds = input_pipeline.create_dataset(
      config.data.dir,
      "validation",
      config.data,
      local_batch_size,
      train=False,
      caption_mode="first",
      **common,
    )
    return iter(ds)

  return iter(train_ds), validation


# --- State ---------------------------------------------------------------------------------


def create_state(config, mesh):
  """Builds the sharded train state directly on the devices.

  Returns:
    (graphdef, state, state_shardings) where state = {"model": nnx.State, "rng": key}.
  """
  family = registry.get(config.model.name)
  graphdef, abstract_state = run.abstract_state(config)
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
  """Pure step: (state, batch, step) -> (state, metrics); the family does the maths."""
  family, hp = registry.for_config(config)
  nan_step = config.debug.inject_nan_at_step

  def train_step(state, batch, step):
    bundle = nnx.merge(graphdef, state["model"])
    rng = jax.random.fold_in(state["rng"], step)
    if nan_step > 0:  # Debug only: a NaN image at that step proves the NaN stop works.
      batch = {**batch, "image": batch["image"] * jnp.where(step + 1 == nan_step, jnp.nan, 1.0)}
    metrics = family.train_step(bundle, batch, rng, hp)
    return {"model": nnx.state(bundle), "rng": state["rng"]}, metrics

  return train_step


def check_finite(step: int, metrics: dict[str, float]) -> None:
  """Raises FloatingPointError naming the step and the first bad metric."""
  for name, value in metrics.items():
    if not np.isfinite(value):
      raise FloatingPointError(
        f"step {step}: {name} is {value}; stopping (last good checkpoint kept)"
      )


# --- Evaluation during training --------------------------------------------------------------


def light_evaluation(config, mesh, family, state, validation, eval_fn, sample_fn, step, writer):
  """The family's held-out metrics over a few batches, and its picture of K samples."""
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), step)
  totals: dict[str, list[float]] = {}
  iterator = validation()
  grid_batch = None
  for index in range(config.num_eval_batches):
    local = next(iterator, None)
    if local is None or len(local["image"]) * jax.process_count() != config.global_batch_size:
      break
    batch = sharding.global_batch(local, mesh, family.batch.device_keys)
    if grid_batch is None:
      grid_batch = batch
    values = jax.device_get(eval_fn(state, batch, jax.random.fold_in(rng, index)))
    for name, value in values.items():
      totals.setdefault(f"eval/{name}", []).append(float(value))
  scalars = {name: float(np.mean(v)) for name, v in totals.items()}
  if grid_batch is not None:
    samples = multihost_utils.process_allgather(sample_fn(state, grid_batch, rng), tiled=True)
    host = multihost_utils.process_allgather(grid_batch, tiled=True)
    n = config.num_grid_examples
    picture = family.visualize({k: v[:n] for k, v in host.items()}, samples[:, :n])
    writer.image(step, "samples", picture)
    if jax.process_index() == 0:
      os.makedirs(os.path.join(writer.workdir, "samples"), exist_ok=True)
      images.save_png(os.path.join(writer.workdir, "samples", f"step_{step:07d}.png"), picture)
  writer.scalars(step, scalars)
  return scalars


def check_config(config: ml_collections.ConfigDict) -> registry.Family:
  """The family's own checks and the data knobs the trainer reads, as one-line UserErrors
  before any work; returns the family."""
  family, _ = registry.for_config(config)
  try:
    masks.parse(config.data.mask)
    batching.parse_text_source(batching.text_source_of(config.data))
  except ValueError as error:
    raise UserError(str(error)) from None
  return family


# --- The loop --------------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.model.name` on the prepared folder `config.data.dir`, resuming from
  `workdir` if it holds a checkpoint. (`inpainting.main` prepares the synthetic default.)

  Returns:
    The last logged metrics (host floats), for tests and scripts.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  family = check_config(config)
  if not config.data.dir or not os.path.isfile(
    os.path.join(config.data.dir, records.METADATA_FILE)
  ):
    raise UserError(
      f"config.data.dir={config.data.dir!r} is not a prepared dataset "
      "(run `python -m data_prep.prepare`, or train through `python -m inpainting.main`)"
    )
  config = run.finalize_config(config)
  run.write_run_files(config, workdir)  # Refuses a resumed run with a changed model.
  mesh = sharding.make_mesh(config.mesh, config.global_batch_size)
  train_iter, validation = make_datasets(config, family)
  data_state = checkpointing.DataIteratorState(train_iter)

  # State: created sharded on the devices, or restored from the newest good checkpoint.
  graphdef, state, state_shardings = create_state(config, mesh)
  params = count_params(graphdef, state)
  logs.console(f"parameters: {params} on mesh {dict(mesh.shape)}")
  checkpointer = run.open_checkpoints(
    workdir,
    read_only=False,
    save_every_steps=config.checkpoint_every_steps,
    keep=config.keep_checkpoints,
  )
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_shardings
  )
  first_step, restored = run.restore(
    checkpointer, workdir, abstract, data=data_state, move_corrupt=True
  )
  if restored is None:
    first_step = 0
  else:
    state = restored
    logs.console(f"resumed from step {first_step}")

  # Compile ahead of time (errors surface before the loop, FLOPs are known up front).
  device_keys = family.batch.device_keys
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
    for k in device_keys
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
  hp = family.hparams(config)
  sample_fn = jax.jit(run.state_fn(graphdef, family.sample, config.num_grid_samples, hp))
  eval_fn = jax.jit(run.state_fn(graphdef, family.evaluate, hp))

  writer = logs.Writer(workdir)
  if first_step == 0:
    writer.scalars(0, {f"params/{k}": v for k, v in params.items()})
  progress = logs.Progress(config.num_train_steps, config.global_batch_size, first_step)
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  last_metrics: dict[str, float] = {}

  def flush_metrics() -> dict[str, float]:
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
      batch = sharding.global_batch(local_batch, mesh, device_keys)
      if ids_file is not None:
        ids_file.write(f"{step + 1}\t" + " ".join(map(str, local_batch["id"])) + "\n")
      state, metrics = train_step(state, batch, jnp.int32(step))
      step += 1
      pending.append((step, metrics))
      done = step == config.num_train_steps
      stop = checkpointer.should_stop(step)

      # --- Logging (and the NaN check, before any save of this step) ---
      will_save = done or stop or checkpointer.should_save(step)
      if step % config.log_every_steps == 0 or will_save:
        last_metrics = flush_metrics()
      if step % config.log_every_steps == 0 or done:
        perf = progress.update(step)
        if flops:
          perf["perf/gflops_per_second"] = flops / perf["perf/step_time_s"] / 1e9
        writer.scalars(step, {**last_metrics, **perf})
        logs.console(progress.line(step, perf, last_metrics, family.progress_metrics))

      # --- Checkpoint (async); its data state is the one after this step's batch. ---
      if will_save and checkpointer.save(step, state, data_state, force=done or stop):
        logs.console(f"checkpoint at step {step} (written in the background)")
      if stop:
        logs.console(f"stop requested (SIGTERM/preemption): saved step {step}, exiting")
        break

      # --- Light evaluation and picture, as the family defines them ---
      if step % config.eval_every_steps == 0 or (done and config.eval_every_steps <= step):
        scalars = light_evaluation(
          config, mesh, family, state, validation, eval_fn, sample_fn, step, writer
        )
        logs.console(f"eval at step {step}: " + logs.compact(scalars))
        last_metrics.update(scalars)
        progress.update(step)  # Evaluation time does not count as training time.

      if not done:
        wait_start = time.perf_counter()
        local_batch = next(train_iter)
        progress.add_data_wait(time.perf_counter() - wait_start)
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
