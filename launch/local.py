r"""This machine: run synthjax as one process, or as several connected over loopback
(to try the multi-process path, or one process per local GPU).

  python -m launch.local --config=configs/quickstart.py --workdir=runs/q
  python -m launch.local --config=configs/quickstart.py:smoke --workdir=/tmp/mp \
      --processes=2 --cpu-devices=2 --dry-run

With `--processes=N` (N > 1) it starts N copies of the command with
`--coordinator_address=127.0.0.1:<port> --num_processes=N --process_id=i`, each with
`--cpu-devices` forced CPU devices (CPU) or its own GPU (`--gpus`: CUDA_VISIBLE_DEVICES=i).
Ctrl-C or SIGTERM is passed to every process: they save at the same step and exit 0; run the
same command again to resume. Process 0's output is shown; the others' go to
`<workdir>/process_<i>.log`. The exit status is the worst of theirs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from launch import common


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--override", action="append", default=[], help="field=value, repeatable")
    p.add_argument("--processes", type=int, default=1)
    devices = p.add_mutually_exclusive_group()
    devices.add_argument("--cpu-devices", type=int, default=0, help="forced CPU devices each")
    devices.add_argument("--gpus", action="store_true", help="one local GPU per process")
    p.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
    p.add_argument(
        "--loopback",
        action="store_true",
        help="connect even a single process through a loopback coordinator (on CPU: gloo "
        "collectives, whose sums match a multi-process run's to the bit)",
    )
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    common.check_config(args.config)
    if args.processes < 1:
        raise common.LaunchError("--processes must be at least 1")
    if args.cpu_devices < 0:
        raise common.LaunchError("--cpu-devices must be 0 (no forcing) or more")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_plan(args: argparse.Namespace, port: int) -> list[tuple[dict[str, str], list[str]]]:
    """[(environment changes, command)] for each process."""
    plan = []
    for i in range(args.processes):
        extra = []
        if args.processes > 1 or args.loopback:
            extra = [
                f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={args.processes}",
                f"--process_id={i}",
            ]
        env = {}
        if args.cpu_devices:
            env["JAX_PLATFORMS"] = "cpu"
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.cpu_devices}"
        if args.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i)
        command = common.main_command(
            args.config, args.workdir, args.override, python=sys.executable, extra=extra
        )
        plan.append((env, command))
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    port = args.port or (free_port() if args.processes > 1 or args.loopback else 0)
    plan = process_plan(args, port)
    print(f"local: {args.processes} process(es), {args.config} -> {args.workdir}")
    for i, (env, command) in enumerate(plan):
        common.say(
            f"process {i}",
            " ".join(f"{k}={v}" for k, v in env.items()) + " " + common.shell(command),
        )
    if args.dry_run:
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    procs, logs = [], []
    for i, (env, command) in enumerate(plan):
        out = None
        if i > 0:
            out = open(os.path.join(args.workdir, f"process_{i}.log"), "a")
            logs.append(out)
        procs.append(
            subprocess.Popen(
                command, cwd=common.REPO, env={**os.environ, **env}, stdout=out, stderr=out
            )
        )

    def forward(signum, frame):
        del frame
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, forward)
    statuses = [proc.wait() for proc in procs]
    for f in logs:
        f.close()
    if any(statuses):
        print(f"local: exit statuses {statuses}", file=sys.stderr)
    return max(statuses, key=abs)


if __name__ == "__main__":
    sys.exit(main())
