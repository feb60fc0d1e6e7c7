r"""GPU clusters under SLURM: write a batch script that runs synthjax on every node, and
submit it (`sbatch`), requeued after preemption until the run is done.

  python -m launch.slurm --config=configs/cxr_256.py --workdir=/shared/runs/cxr256 \
      --nodes=2 --gpus-per-node=8 --partition=gpu --time=24:00:00 --dry-run

One process per GPU (`--per=gpu`, the default: `srun` starts nodes x gpus tasks) or per node
(`--per=node`: one task drives all of the node's GPUs). Process 0 runs on the first node
and is the coordinator; JAX reads the addresses, counts and ranks from the SLURM variables
`srun` sets (`--distributed=on`). Every task sees all of its node's GPUs, as JAX's SLURM
detection expects: per GPU, JAX gives each task the GPU of its local rank (with
`--gpus-per-task=1` each task would see one GPU, numbered 0, and ranks above 0 would ask
for a GPU that is not there); per node, the task is told to drive them all
(`--local_device_ids`).

Preemption: the script asks SLURM for SIGTERM `--signal-lead` seconds before the end of the
allocation and is requeued (`--requeue`). synthjax saves on SIGTERM at the same step on every
process and exits 0; the script then requeues itself while the run is not finished, and the
next allocation resumes from that checkpoint. A node that dies (SIGKILL) loses only the work
since the last periodic checkpoint. The workdir must be on storage every node sees.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from launch import common


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True, help="on storage every node sees (or gs://)")
    p.add_argument("--override", action="append", default=[], help="field=value, repeatable")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--per", choices=("gpu", "node"), default="gpu")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--time", default="24:00:00", help="per allocation, HH:MM:SS")
    p.add_argument("--cpus-per-task", type=int, default=8)
    p.add_argument("--signal-lead", type=int, default=300, help="seconds of notice")
    p.add_argument("--job-name", default="synthjax")
    p.add_argument("--setup", default="", help="shell lines before the run (modules, venv)")
    p.add_argument("--script", default=None, help="where to write the batch script")
    p.add_argument("--dry-run", action="store_true", help="print the script; submit nothing")
    args = p.parse_args(argv)
    common.check_config(args.config)
    if args.nodes < 1 or args.gpus_per_node < 1:
        raise common.LaunchError("--nodes and --gpus-per-node must be at least 1")
    if not re.fullmatch(r"(\d+-)?\d{1,3}(:\d{2}){0,2}", args.time):
        raise common.LaunchError(f"--time {args.time!r}: use HH:MM:SS or D-HH:MM:SS")
    if re.search(r"\s", args.workdir):
        # #SBATCH lines are not shell: a quoted --output path is not read as one word there.
        raise common.LaunchError(f"--workdir {args.workdir!r}: use a path without spaces")
    if args.signal_lead < 30:
        raise common.LaunchError("--signal-lead under 30 s leaves too little time to save")
    return args


def batch_script(args: argparse.Namespace) -> str:
    tasks_per_node = args.gpus_per_node if args.per == "gpu" else 1
    processes = args.nodes * tasks_per_node
    extra = ["--distributed=on"]
    if args.per == "node":
        extra.append(f"--local_device_ids={','.join(map(str, range(args.gpus_per_node)))}")
    job = common.main_command(
        args.config, args.workdir, args.override, python="python", extra=extra
    )
    stages = common.stages_of(args.config, args.override)
    # The same test the launchers use: every summary.json there and readable, on a local
    # path or in a bucket (`[ -f gs://... ]` would always be false: requeued forever).
    done_test = common.shell(["python", "-m", "launch.common", "finished", args.workdir, *stages])
    directives = [
        f"--job-name={args.job_name}",
        f"--nodes={args.nodes}",
        f"--ntasks-per-node={tasks_per_node}",
        f"--gpus-per-node={args.gpus_per_node}",
        f"--cpus-per-task={args.cpus_per_task}",
        f"--time={args.time}",
        f"--signal=B:TERM@{args.signal_lead}",
        "--requeue",
        "--open-mode=append",
        f"--output={args.workdir}/slurm-%j.out"
        if "://" not in args.workdir
        else "--output=slurm-%j.out",
    ]
    if args.partition:
        directives.append(f"--partition={args.partition}")
    if args.account:
        directives.append(f"--account={args.account}")
    return "\n".join(
        [
            "#!/bin/bash",
            *(f"#SBATCH {d}" for d in directives),
            f"# {processes} JAX processes ({args.nodes} nodes x {tasks_per_node}); "
            "process 0 on the first node coordinates.",
            "set -uo pipefail",
            f"cd {common.shell([str(common.REPO)])}",
            *([args.setup] if args.setup else []),
            "",
            "# SIGTERM (preemption or the end of the allocation) goes to every task; each",
            "# saves at the same step and exits 0.",
            "trap 'kill -TERM $SRUN_PID 2>/dev/null' TERM",
            f"srun --kill-on-bad-exit=1 {common.shell(job)} &",
            "SRUN_PID=$!",
            "wait $SRUN_PID; wait $SRUN_PID",
            "status=$?",
            f"if {done_test}; then",
            '  echo "synthjax: run finished"; exit 0',
            "fi",
            'if [ "$status" -eq 0 ]; then',
            '  echo "synthjax: stopped before the end; requeueing"',
            '  scontrol requeue "$SLURM_JOB_ID"',
            "fi",
            "exit $status",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    script = batch_script(args)
    processes = args.nodes * (args.gpus_per_node if args.per == "gpu" else 1)
    print(
        f"SLURM: {args.config} -> {args.workdir} on {args.nodes} node(s) x "
        f"{args.gpus_per_node} GPU(s), {processes} process(es)"
    )
    if args.dry_run:
        print(script)
        common.say("submit", ["sbatch", args.script or "<script>"])
        return 0
    path = Path(args.script or f"{args.job_name}.sbatch")
    path.write_text(script)
    print(f"wrote {path}")
    common.execute("submit", ["sbatch", str(path)], dry_run=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
