r"""Entry point: parse flags, start JAX (multi-host when asked), run the pipeline.

  python -m synthjax.main --config=configs/quickstart.py --workdir=runs/quickstart
  python -m synthjax.main --config=configs/quickstart.py:smoke --workdir=/tmp/smoke \
      --config.gan.train_steps=100

Several processes (one per host, or per GPU) run the same command; they connect when the
environment says so (a SLURM job step, a multi-worker TPU slice) or when told:

  python -m synthjax.main ... --coordinator_address=10.0.0.2:8476 --num_processes=2 \
      --process_id=0      # and --process_id=1 on the other host
"""

import logging as std_logging
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from synthjax import config_files, distributed, experiment
from synthjax.errors import Preempted, SynthjaxError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/<name>.py[:variant]).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_enum(
    "distributed",
    "auto",
    list(distributed.MODES),
    "Join a multi-process run: auto (when flags, SLURM or a TPU slice say so), on (always; "
    "JAX detects the cluster), off (never).",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes in the run (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])


# Libraries whose INFO lines (one per checkpoint file, per dataset open) would drown the
# progress lines; their warnings and errors still show.
QUIET_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/xla_bridge", "/grain/")


class _QuietLibraries(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(
            p in record.pathname for p in QUIET_LIBRARIES
        )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    try:
        # First: nothing may touch a JAX backend before the processes connect.
        distributed.initialize(
            distributed.Launch(
                FLAGS.distributed,
                FLAGS.coordinator_address,
                FLAGS.num_processes,
                FLAGS.process_id,
            )
        )
    except SynthjaxError as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    logging.info(
        "JAX process %d/%d, %d local / %d global devices (%s)",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.default_backend(),
    )
    try:
        experiment.run(FLAGS.config, FLAGS.workdir)
    except Preempted as e:
        print(f"\n{e}", file=sys.stderr, flush=True)
        sys.exit(0)
    except SynthjaxError as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def _configs_importable(argv: list[str]) -> None:
    """Lets config files `from configs import default` wherever the job is started from:
    they are loaded by path, not as modules of a package."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        config_files.make_importable(value.split(":", 1)[0])


if __name__ == "__main__":
    _configs_importable(sys.argv)
    app.run(main)
