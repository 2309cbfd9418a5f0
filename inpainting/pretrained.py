"""Loading converted pretrained weights into NNX modules (Inception, MiniLM).

A converted checkpoint is a flat {"a/b/c": array} mapping whose names are the module's
parameter paths joined by "/"; loading checks that the names and shapes match exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx


class PretrainedWeight(nnx.Variable):
  """A frozen pretrained weight: not an `nnx.Param`, so no optimizer or gradient touches it
  (it is still part of the model's state, and so of its checkpoints)."""


def param_names(model: nnx.Module) -> dict[str, tuple[int, ...]]:
  """'/'-joined path of every variable -> its shape, e.g. 'layers/3/query/kernel'."""
  return {
    "/".join(map(str, path)): tuple(node.shape)
    for path, node in nnx.iter_graph(model)
    if isinstance(node, nnx.Variable)
  }


def load_params(model: nnx.Module, params: Mapping[str, np.ndarray], what: str) -> nnx.Module:
  """Fills `model` in place from a flat {path: array} mapping (float32).

  Raises:
    ValueError: a name is missing or unexpected, or a shape differs (`what` names the
      weights in the message).
  """
  expected = param_names(model)
  missing = sorted(set(expected) - set(params))
  extra = sorted(set(params) - set(expected))
  if missing or extra:
    raise ValueError(f"{what} weights do not match: missing {missing[:5]}, unexpected {extra[:5]}")
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Variable):
      name = "/".join(map(str, path))
      value = np.asarray(params[name], np.float32)
      if value.shape != expected[name]:
        raise ValueError(f"{name}: shape {value.shape}, expected {expected[name]}")
      node[...] = jnp.asarray(value)
  return model
