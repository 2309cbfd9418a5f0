"""A trained run, ready to sample: used by `evaluate`, `inpaint`, `explore` and the demo.

Reads the run through run.py and samples through the run's family, so it imports neither
the trainer nor grain.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import ml_collections
import numpy as np
from flax import nnx

from inpainting import batching, run
from inpainting import tokenizer as tokenizers
from inpainting.models import registry
from inpainting.tokenizer import TextTokenizer


@dataclasses.dataclass
class Run:
  """A trained model ready to sample."""

  workdir: str
  config: ml_collections.ConfigDict
  graphdef: nnx.GraphDef
  state: dict
  step: int
  tokenizer: TextTokenizer
  family: registry.Family
  hparams: registry.HParams

  @property
  def name(self) -> str:
    """The model's name, marked when it ignores captions (the no-text ablation)."""
    model = self.config.model
    return model.name + ("" if model.get("use_caption", True) else "_nocaption")

  def sample(self, batch: dict[str, np.ndarray], num_samples: int, seed: int) -> np.ndarray:
    """The family's samples ([num_samples, B, ...]) for a host batch."""
    device_batch = {k: jax.numpy.asarray(batch[k]) for k in self.family.batch.device_keys}
    sampler = _sampler(self.graphdef, self.family, self.hparams, num_samples)
    return np.asarray(sampler(self.state, device_batch, jax.random.PRNGKey(seed)))

  def batch_from_image(
    self, pixels: np.ndarray, mask: np.ndarray, captions: list[str]
  ) -> dict[str, np.ndarray]:
    """A one-example batch from a user's image, hole and caption(s), tokenised as trained."""
    max_length = self.config.data.max_caption_length
    return batching.from_image(
      pixels, mask, captions, self.tokenizer, max_length, self.family.batch
    )

  def visualize(self, batch: dict[str, np.ndarray], samples: np.ndarray) -> np.ndarray:
    return self.family.visualize(batch, samples)


@functools.lru_cache(maxsize=16)
def _sampler(graphdef: nnx.GraphDef, family: registry.Family, hparams, num_samples: int):
  """One jitted sampler per model structure, shared by every checkpoint of a run.

  Keyed by the graph definition rather than the Run, so the cache holds no parameters and
  evaluating many checkpoints compiles once.
  """
  return jax.jit(run.state_fn(graphdef, family.sample, num_samples, hparams))


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the checkpoints kept in `workdir`, ascending."""
  checkpointer = run.open_checkpoints(os.path.abspath(workdir), read_only=True)
  try:
    return sorted(checkpointer.all_steps())
  finally:
    checkpointer.close()


def load_run(workdir: str, step: int | None = None, average: bool = True) -> Run:
  """Restores the model of `workdir` at `step` (default: the newest readable checkpoint).

  A run that keeps a moving average of its weights (`optim.ema_decay` > 0) samples with it;
  `average=False` samples with the raw weights instead (the average's ablation).

  Raises:
    UserError: no config, no checkpoint, an unknown or unreadable step, a checkpoint
      that does not match the run's config.json, or `average=False` for a run without one.
  """
  from inpainting.errors import UserError  # noqa: PLC0415

  workdir = os.path.abspath(workdir)
  config = run.load_config(workdir)
  family, hparams = registry.for_config(config)
  graphdef, abstract = run.abstract_state(config)
  single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=single), abstract
  )
  checkpointer = run.open_checkpoints(workdir, read_only=True)
  try:
    step, state = run.restore(checkpointer, workdir, abstract, step=step)
  finally:
    checkpointer.close()
  if state is None:
    raise UserError(f"{workdir} has no readable checkpoint")
  if not average:
    graphdef, state = _without_average(graphdef, state, workdir)
  tokenizer = tokenizers.load(run.tokenizer_path(workdir))
  return Run(workdir, config, graphdef, state, step, tokenizer, family, hparams)


def _without_average(graphdef: nnx.GraphDef, state: dict, workdir: str):
  """(graphdef, state) of the same model with its moving average dropped, so the family's
  `sample` (which reads the average when one is kept) uses the raw weights."""
  from inpainting.errors import UserError  # noqa: PLC0415

  bundle = nnx.merge(graphdef, state["model"])
  if getattr(bundle, "ema", None) is None:
    raise UserError(f"{workdir} keeps no moving average of its weights (optim.ema_decay is 0)")
  bundle.ema = None
  graphdef, model_state = nnx.split(bundle)
  return graphdef, {**state, "model": model_state}
