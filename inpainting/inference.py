"""Loading a trained run for evaluation and inference (the same registry and checkpoint)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import ml_collections
import numpy as np
from flax import nnx

from inpainting import checkpointing, records, sharding
from inpainting.errors import UserError
from inpainting.models import registry
from inpainting.tokenizer import Tokenizer
from inpainting.train import CONFIG_FILE, abstract_bundle


@dataclasses.dataclass
class Run:
  """A trained model ready to sample."""

  workdir: str
  config: ml_collections.ConfigDict
  graphdef: nnx.GraphDef
  state: dict
  step: int
  tokenizer: Tokenizer
  family: registry.Family

  def sample(self, batch: dict[str, np.ndarray], num_samples: int, seed: int) -> np.ndarray:
    """[num_samples, B, 64, 64, 3] completions in [-1, 1] for a host batch."""
    device_batch = {k: jax.numpy.asarray(batch[k]) for k in sharding.DEVICE_KEYS}
    return np.asarray(
      _sampler(self.graphdef, self.family, num_samples)(
        self.state, device_batch, jax.random.PRNGKey(seed)
      )
    )


@functools.lru_cache(maxsize=16)
def _sampler(graphdef: nnx.GraphDef, family: registry.Family, num_samples: int):
  """One jitted sampler per model structure, shared by every checkpoint of a run.

  Keyed by the graph definition rather than the Run, so the cache holds no parameters and
  evaluating many checkpoints compiles once.
  """

  def sample(state, batch, rng):
    bundle = nnx.merge(graphdef, state["model"])
    return family.sample(bundle, batch, rng, num_samples)

  return jax.jit(sample)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UserError(f"{workdir} holds no trained run (no {CONFIG_FILE})")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def _read_only_checkpointer(workdir: str) -> checkpointing.Checkpointer:
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise UserError(f"{workdir} has no checkpoints")
  return checkpointing.Checkpointer(
    directory, save_every_steps=1, keep=1, async_save=False, read_only=True
  )


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the checkpoints kept in `workdir`, ascending."""
  checkpointer = _read_only_checkpointer(os.path.abspath(workdir))
  try:
    return sorted(checkpointer.all_steps())
  finally:
    checkpointer.close()


def load_run(workdir: str, step: int | None = None) -> Run:
  """Restores the model of `workdir` at `step` (default: the latest checkpoint).

  Raises:
    UserError: no config, no checkpoint, or an unknown step.
  """
  workdir = os.path.abspath(workdir)
  config = load_config(workdir)
  checkpointer = _read_only_checkpointer(workdir)
  try:
    steps = checkpointer.all_steps()
    if not steps:
      raise UserError(f"{workdir} has no checkpoints")
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise UserError(f"no checkpoint at step {step} in {workdir}; have {sorted(steps)}")
    graphdef, abstract_model = abstract_bundle(config)
    device = jax.devices()[0]
    single = jax.sharding.SingleDeviceSharding(device)
    abstract = {
      "model": abstract_model,
      "rng": jax.ShapeDtypeStruct((2,), np.uint32),
    }
    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=single), abstract
    )
    state = checkpointer.restore_state(step, abstract)
  finally:
    checkpointer.close()
  tokenizer = Tokenizer(os.path.join(workdir, records.TOKENIZER_FILE))
  return Run(workdir, config, graphdef, state, step, tokenizer, registry.get(config.model.name))
