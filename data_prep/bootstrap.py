"""A config's data folder for scripts and tests: synthetic scenes when no data.dir is given.

The same thing `inpainting.main` does on first use (it runs `python -m data_prep.prepare`,
since inpainting/ never imports data_prep/), as a function.
"""

from __future__ import annotations

import os

import jax
import ml_collections
from jax.experimental import multihost_utils

from data_prep.core import prepare
from inpainting import logs, records
from inpainting.errors import UserError


def resolve_data_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The prepared dataset folder of `config`; prepares synthetic scenes on first use.

  With `config.data.dir` set, checks that it is a prepared folder. Otherwise scenes are
  generated once into WORKDIR/data (process 0 writes; every process waits for it).

  Raises:
    UserError: `config.data.dir` is not a prepared dataset.
  """
  if config.data.dir:
    data_dir = os.path.abspath(os.path.expanduser(config.data.dir))
    if not os.path.isfile(os.path.join(data_dir, records.METADATA_FILE)):
      raise UserError(
        f"config.data.dir={config.data.dir} is not a prepared dataset "
        f"(run `python -m data_prep.prepare` first)"
      )
    return data_dir
  data_dir = os.path.join(os.path.abspath(workdir), "data")
  if jax.process_index() == 0 and not os.path.isfile(os.path.join(data_dir, records.METADATA_FILE)):
    logs.console(f"no data.dir given: preparing synthetic scenes into {data_dir}")
    prepare(
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
