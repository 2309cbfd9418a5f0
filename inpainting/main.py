"""Entry point: `python -m inpainting.main --config=configs/vaegan.py --workdir=DIR`.

With no `--config.data.dir`, synthetic scenes are prepared into WORKDIR/data first, by
running `python -m data_prep.prepare` (imports go one way: inpainting never imports
data_prep); then `train.train_and_evaluate` runs on the prepared folder.

Multi-host runs call `jax.distributed.initialize()` first: with explicit flags on bare
machines (launch/local.sh), detected automatically under SLURM (`srun` with several tasks),
and with `--distributed=on` on Kubernetes, where JAX finds the JobSet's pods itself
(needs `jax[k8s]`; see launch/k8s/).
"""

import os
import subprocess
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard, sample grids; resumed if present.")
flags.DEFINE_enum(
  "distributed",
  "auto",
  ["auto", "on", "off"],
  "auto: initialize jax.distributed when the flags below or SLURM ask for it; on: always "
  "(Kubernetes, or any cluster JAX auto-detects); off: never.",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (bare machines).")
flags.DEFINE_integer("num_processes", None, "Total processes (bare machines).")
flags.DEFINE_integer("process_id", None, "This process's index (bare machines).")
flags.mark_flags_as_required(["config", "workdir"])


def _cluster_detected() -> bool:
  """True inside an `srun` step with several tasks."""
  return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def initialize_distributed() -> None:
  import jax  # noqa: PLC0415

  explicit = FLAGS.coordinator_address is not None
  if FLAGS.distributed == "off" or (
    FLAGS.distributed == "auto" and not explicit and not _cluster_detected()
  ):
    return
  jax.distributed.initialize(
    coordinator_address=FLAGS.coordinator_address,
    num_processes=FLAGS.num_processes,
    process_id=FLAGS.process_id,
  )
  logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def with_default_data(config, workdir: str):
  """`config` with data.dir set: synthetic scenes in WORKDIR/data, prepared on first use."""
  import jax  # noqa: PLC0415
  import ml_collections  # noqa: PLC0415
  from jax.experimental import multihost_utils  # noqa: PLC0415

  from inpainting import logs, records  # noqa: PLC0415
  from inpainting.errors import UserError  # noqa: PLC0415

  if config.data.dir:
    return config
  data_dir = os.path.join(os.path.abspath(workdir), "data")
  if jax.process_index() == 0 and not os.path.isfile(os.path.join(data_dir, records.METADATA_FILE)):
    logs.console(f"no data.dir given: preparing synthetic scenes into {data_dir}")
    command = [
      sys.executable,
      "-m",
      "data_prep.prepare",
      "--source=synthetic",
      f"--output_dir={data_dir}",
      f"--num_train={config.data.synthetic_num_train}",
      f"--num_validation={config.data.synthetic_num_validation}",
      f"--vocab_size={config.data.vocab_size}",
      f"--seed={config.seed}",
    ]
    status = subprocess.run(command, check=False).returncode
    if status != 0:
      raise UserError(f"preparing synthetic scenes into {data_dir} failed (exit {status})")
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("synthetic data prepared")
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.dir = data_dir
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from inpainting import logs, train  # noqa: PLC0415  (after flags, so --help stays fast)
  from inpainting.errors import UserError  # noqa: PLC0415

  logs.quiet_libraries()
  initialize_distributed()
  try:
    train.check_config(FLAGS.config)  # Config mistakes first, before preparing any data.
    # First use: no data.dir means synthetic scenes, prepared into WORKDIR/data once.
    config = with_default_data(FLAGS.config, FLAGS.workdir)
    train.train_and_evaluate(config, FLAGS.workdir)
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
  app.run(main)
