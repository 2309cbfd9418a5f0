"""The discriminator half of a GAN step, shared by the GAN families (vaegan, pix2pix)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx

from inpainting.models import layers


def update_discriminator(
  discriminator: nnx.Module,
  optimizer: nnx.Optimizer,
  loss_fn: Callable[[nnx.Module], tuple[jax.Array, dict[str, Any]]],
) -> tuple[jax.Array, dict[str, Any], tuple[nnx.GraphDef, nnx.State]]:
  """Takes one optimizer step on D's parameters.

  Args:
    discriminator: D, updated in place.
    optimizer: D's optimizer.
    loss_fn: D -> (loss, aux metrics).

  Returns:
    (loss, aux plus "grad_norm_d", (graphdef, state)) where the last is a snapshot of the updated D that the
    generator step merges into a copy, so G's gradient never flows into D.
  """
  (loss, aux), grads = nnx.value_and_grad(
    loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True
  )(discriminator)
  optimizer.update(discriminator, grads)
  aux = {**aux, "grad_norm_d": optax.tree.norm(grads)}
  return loss, aux, snapshot(discriminator)


def snapshot(module: nnx.Module) -> tuple[nnx.GraphDef, nnx.State]:
  """(graphdef, state) of `module` as it is now. `nnx.split` alone returns the live
  variables, which later in-place updates would change; mapping the state rebuilds them."""
  graphdef, state = nnx.split(module)
  return graphdef, jax.tree.map(lambda x: x, state)


def learning_rates(opt_g: nnx.Optimizer, opt_d: nnx.Optimizer) -> dict[str, jax.Array]:
  """The G and D learning rates of the step just taken, as metrics."""
  return {
    "learning_rate": layers.learning_rate(opt_g),
    "learning_rate_d": layers.learning_rate(opt_d),
  }
