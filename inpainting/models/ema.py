"""An exponential moving average of parameters, kept in the model bundle.

Sampling and evaluation with averaged generator weights is standard GAN practice (it
smooths the oscillation of adversarial training). The averages are `EmaWeight` variables,
not `nnx.Param`, so no optimizer trains them; they are part of the bundle's state, so they
are checkpointed and restored (exact resume) like everything else.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class EmaWeight(nnx.Variable):
  """The moving average of one parameter."""


def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def decay_at(step: jax.Array, decay: float) -> jax.Array:
  """`decay`, lowered early on ((1 + t) / (10 + t)) so short runs do not average in the init."""
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + t) / (10.0 + t))


class ParameterAverage(nnx.Module):
  """Moving averages of the `nnx.Param`s of some modules (a tuple, in a fixed order)."""

  def __init__(self, parts: Sequence[nnx.Module]):
    params = nnx.to_pure_dict(nnx.state(tuple(parts), nnx.Param))
    self.weights = nnx.data(jax.tree.map(lambda p: EmaWeight(jnp.array(p)), params))

  def update(self, parts: Sequence[nnx.Module], step: jax.Array, decay: float) -> None:
    """average <- d * average + (1 - d) * parameter, d = `decay_at(step, decay)`."""
    d = decay_at(step, decay)
    params = nnx.to_pure_dict(nnx.state(tuple(parts), nnx.Param))

    def mix(average: EmaWeight, param: jax.Array) -> None:
      average[...] = d * average[...] + (1.0 - d) * param

    jax.tree.map(mix, self.weights, params, is_leaf=_is_variable)

  def averaged(self, parts: Sequence[nnx.Module]) -> tuple[nnx.Module, ...]:
    """Copies of `parts` whose parameters are the averages (other state is shared)."""
    graph, params, rest = nnx.split(tuple(parts), nnx.Param, ...)
    nnx.replace_by_pure_dict(
      params, jax.tree.map(lambda v: v[...], self.weights, is_leaf=_is_variable)
    )
    return nnx.merge(graph, params, rest)
