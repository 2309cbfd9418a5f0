"""Refactors keep behaviour: parameter counts and losses after 3 fixed-seed steps.

The expected values were recorded from the code before the family-contract refactor; a
change that alters what a family computes (initialisation, loss terms, step order, data
flow) changes them. Tiny configs, one fixed batch, the trainer's own state and step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpainting import sharding, train
from tests.test_models import l2_tiny_config, make_batch, pix2pix_tiny_config, vaegan_config

EXPECTED = {  # name: (parameter counts per part, {metric: value after step 3})
  "l2": (
    {"generator": 36108, "text": 16640},
    {
      "kl_cond": 9.20479214983061e-05,
      "l1_hole": 0.5434794425964355,
      "loss": 0.24662576615810394,
      "loss_l1": 0.1850670874118805,
      "loss_l2": 0.15409213304519653,
    },
  ),
  "pix2pix": (
    {"discriminator": 11829, "generator": 115179},
    {
      "l1_hole": 0.504109799861908,
      "loss_d": 0.6938066482543945,
      "loss_d_fake": 0.8483240604400635,
      "loss_d_real": 0.5392892956733704,
      "loss_g": 50.78583908081055,
      "loss_g_adv": 0.5922711491584778,
      "loss_l1": 0.5019356608390808,
    },
  ),
  "vaegan": (
    {"discriminator": 25257, "generator": 40204, "posterior": 14528, "prior": 14528, "text": 16640},
    {
      "kl_cond": 0.00015741662355139852,
      "kl_z": 3.5977580409962684e-05,
      "l1_hole": 0.5659204125404358,
      "loss_d": 2.4783997535705566,
      "loss_d_fake": 0.9887171387672424,
      "loss_d_mismatch": 0.9842549562454224,
      "loss_d_real": 0.9975550770759583,
      "loss_g": 1.3442877531051636,
      "loss_g_adv": 0.026355747133493423,
      "loss_recon": 1.3416516780853271,
    },
  ),
}


def _run_three_steps(config):
  config.global_batch_size = 4
  config.mesh.num_devices = 1
  mesh = sharding.make_mesh(config.mesh, config.global_batch_size)
  graphdef, state, _ = train.create_state(config, mesh)
  counts = train.count_params(graphdef, state)
  step = jax.jit(train.make_train_step(config, graphdef))
  batch = make_batch(seed=7, empty_first_caption=False)
  for i in range(3):
    state, metrics = step(state, batch, jnp.int32(i))
  return counts, {k: float(v) for k, v in jax.device_get(metrics).items()}


CONFIGS = {"vaegan": vaegan_config, "l2": l2_tiny_config, "pix2pix": pix2pix_tiny_config}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameter_counts_and_losses_are_unchanged(name):
  counts, metrics = _run_three_steps(CONFIGS[name]())
  expected_counts, expected_metrics = EXPECTED[name]
  assert counts == expected_counts
  for key, value in expected_metrics.items():
    np.testing.assert_allclose(metrics[key], value, rtol=2e-4, atol=1e-6, err_msg=key)
