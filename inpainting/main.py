"""Entry point: `python -m inpainting.main --config=configs/vaegan.py --workdir=DIR`.

With no `--config.data.dir`, synthetic scenes are prepared into WORKDIR/data first
(data_prep/bootstrap.py); then `train.train_and_evaluate` runs on the prepared folder.

Multi-host runs call `jax.distributed.initialize()` first: with explicit flags on bare
machines (launch/local.sh), detected automatically under SLURM (`srun` with several tasks),
and with `--distributed=on` on Kubernetes, where JAX finds the JobSet's pods itself
(needs `jax[k8s]`; see launch/k8s/).
"""

import os
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from data_prep import bootstrap  # noqa: PLC0415  (after flags, so --help stays fast)
  from inpainting import logs, train  # noqa: PLC0415
  from inpainting.errors import UserError  # noqa: PLC0415

  logs.quiet_libraries()
  initialize_distributed()
  try:
    # First use: no data.dir means synthetic scenes, prepared into WORKDIR/data once.
    config = bootstrap.with_data_dir(FLAGS.config, FLAGS.workdir)
    train.train_and_evaluate(config, FLAGS.workdir)
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
  app.run(main)
