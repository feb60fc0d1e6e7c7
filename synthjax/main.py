r"""Entry point: parse flags, start JAX (multi-host when asked), run the pipeline.

  python -m synthjax.main --config=configs/quickstart.py --workdir=runs/quickstart
  python -m synthjax.main --config=configs/quickstart.py:smoke --workdir=/tmp/smoke \
      --config.gan.train_steps=100

Several processes (one per host, or per GPU) run the same command; they connect when the
environment says so (a SLURM job step, a multi-worker TPU slice) or when told:

  python -m synthjax.main ... --coordinator_address=10.0.0.2:8476 --num_processes=2 \
      --process_id=0      # and --process_id=1 on the other host

A config that differs from the workdir's `config.json` in a field that changes results of
stages already run is refused; `--config_change=rerun_from=<stage>` redoes that stage and
every later one (their earlier results move to `DIR/superseded/`).

Exit status: 0 finished or stopped by SIGTERM / preemption (rerun to continue), 2 refused
(config, data), 3 the workdir is in use by another run (`DIR/lock.json` names it).
"""

import logging as std_logging
import os
import signal
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from synthjax import experiment
from synthjax.core import config_files, distributed, lock
from synthjax.core.errors import Preempted, SynthjaxError

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
flags.DEFINE_list(
    "local_device_ids",
    None,
    "Devices this process drives, e.g. 0,1,2,3 (one process per node over all its GPUs); "
    "unset: JAX's choice (under SLURM, the GPU of the task's local rank).",
)
flags.DEFINE_string(
    "config_change",
    None,
    "rerun_from=<stage>: the config differs from the workdir's config.json in fields that "
    "change results of stages already run; set <stage> and every later stage aside (to "
    "DIR/superseded/) and redo them with the new values. Ignored when nothing needs it.",
)
flags.mark_flags_as_required(["config", "workdir"])


# Libraries whose INFO lines (one per checkpoint file, per dataset open) would drown the
# progress lines; their warnings and errors still show.
QUIET_LIBRARIES = (
    "/orbax/",
    "/tensorflow_datasets/",
    "/jax/_src/xla_bridge",
    "/grain/",
    "/fsspec/",  # a line per file opened in a bucket
    "/gcsfs/",
)


class _QuietLibraries(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(
            p in record.pathname for p in QUIET_LIBRARIES
        )


def _stop_on_sigterm(signum, frame) -> None:
    del frame
    raise Preempted(
        f"Stopped by signal {signum} ({signal.Signals(signum).name}) outside a training loop: "
        "nothing to save there, the stage resumes from what it has written. Rerun the same "
        "command to continue."
    )


def _forward_to_sigterm(signum, frame) -> None:
    del signum, frame
    os.kill(os.getpid(), signal.SIGTERM)


def _release_on_sigterm() -> None:
    """One process: SIGTERM or SIGHUP (a dropped SSH session) outside a training loop (which
    saves first, then stops) raises `Preempted`, so the run unwinds, releasing the workdir's
    lock, instead of dying where it stands. Several processes: JAX's preemption notifier owns
    SIGTERM (all stop together), and SIGHUP is passed on to it."""
    if distributed.is_multiprocess():
        signal.signal(signal.SIGHUP, _forward_to_sigterm)
    else:
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        signal.signal(signal.SIGHUP, _stop_on_sigterm)


def _device_ids(values: list[str] | None) -> tuple[int, ...] | None:
    if not values:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise SynthjaxError(
            f"--local_device_ids={','.join(values)}: use device numbers, e.g. 0,1,2,3"
        ) from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    try:
        rerun_from = experiment.parse_config_change(FLAGS.config_change)
        # First: nothing may touch a JAX backend before the processes connect.
        distributed.initialize(
            distributed.Launch(
                FLAGS.distributed,
                FLAGS.coordinator_address,
                FLAGS.num_processes,
                FLAGS.process_id,
                _device_ids(FLAGS.local_device_ids),
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
    _release_on_sigterm()
    try:
        experiment.run(FLAGS.config, FLAGS.workdir, rerun_from=rerun_from)
    except Preempted as e:
        print(f"\n{e}", file=sys.stderr, flush=True)
        sys.exit(0)
    except lock.WorkdirBusy as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        sys.exit(3)
    except SynthjaxError as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def _find_config(argv: list[str]) -> list[str]:
    """argv with the config file found from any folder (`config_files.find`), and its
    package made importable, so config files can `from configs import default`: they are
    loaded by path, not as modules of a package."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            index, value = i, arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            index, value = i + 1, argv[i + 1]
        else:
            continue
        file, arg_sep, variant = value.partition(":")
        found = config_files.find(file)
        config_files.make_importable(found)
        value = f"{found}{arg_sep}{variant}"
        argv[index] = f"--config={value}" if index == i else value
    return argv


def run() -> None:
    """The `synthjax` console script: the same flags as `python -m synthjax.main`."""
    app.run(main, argv=_find_config(sys.argv))


if __name__ == "__main__":
    run()
