r"""Cloud TPU VMs: create a (spot) TPU VM or pod slice, install synthjax on every worker,
run the same command on all of them, and relaunch after preemption until the run is done.

  python -m launch.tpu_vm --name=cxr256 --zone=us-central2-b --accelerator-type=v4-32 \
      --config=configs/cxr_256.py --workdir=gs://my-bucket/runs/cxr256 --spot --dry-run

What it does, each step printed before it runs (`--dry-run` prints and stops):
1. `gcloud compute tpus tpu-vm create` (with `--spot` or `--preemptible`) unless the VM is
   already READY;
2. copies this checkout (`git archive HEAD`) to every worker and installs it with
   `pip install -e '.[tpu]'`;
3. runs `python -m synthjax.main ... --distributed=on` on all workers (`--worker=all`):
   JAX connects the workers of a pod slice; on a single-host slice nothing changes;
4. when the command ends, checks whether every stage has written its summary in the
   workdir; if not (preempted: the VM is PREEMPTED or gone, or the job exited early), it
   deletes and recreates the VM and goes back to 2, at most `--max-attempts` times.

The workdir must be a bucket (`gs://...`): the VM's disk goes with the VM. The run resumes
from its last checkpoint each time.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Sequence

from launch import common

INSTALL = (
    "set -e; mkdir -p ~/synthjax && tar -xzf ~/synthjax.tar.gz -C ~/synthjax && "
    "cd ~/synthjax && python3 -m pip install --quiet -e '.[tpu]'"
)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="TPU VM name")
    p.add_argument("--zone", required=True)
    p.add_argument("--accelerator-type", required=True, help="e.g. v4-8, v5litepod-16")
    p.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU VM runtime image")
    p.add_argument("--project", default=None)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--spot", action="store_true", help="a spot VM (cheaper, preemptible)")
    kind.add_argument("--preemptible", action="store_true")
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True, help="gs://bucket/path (must outlive the VM)")
    p.add_argument("--override", action="append", default=[], help="field=value, repeatable")
    p.add_argument("--max-attempts", type=int, default=20)
    p.add_argument("--delete-when-done", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    common.check_config(args.config)
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", args.name):
        raise common.LaunchError(f"--name {args.name!r}: lowercase letters, digits and '-'")
    if not re.fullmatch(r"v\d+[a-z]*(pod)?-\d+", args.accelerator_type):
        raise common.LaunchError(
            f"--accelerator-type {args.accelerator_type!r} is not a TPU type like v4-8"
        )
    if not args.workdir.startswith("gs://"):
        raise common.LaunchError(
            f"--workdir {args.workdir!r}: a TPU VM's disk is lost on preemption; use gs://..."
        )
    if args.max_attempts < 1:
        raise common.LaunchError("--max-attempts must be at least 1")
    return args


def _gcloud(args: argparse.Namespace, *words: str) -> list[str]:
    command = ["gcloud", "compute", "tpus", "tpu-vm", *words, f"--zone={args.zone}"]
    return command + ([f"--project={args.project}"] if args.project else [])


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """Every gcloud command the launcher may run, by step."""
    create = _gcloud(
        args,
        "create",
        args.name,
        f"--accelerator-type={args.accelerator_type}",
        f"--version={args.version}",
    )
    if args.spot:
        create.append("--spot")
    elif args.preemptible:
        create.append("--preemptible")
    job = common.main_command(
        args.config, args.workdir, args.override, python="python3", extra=["--distributed=on"]
    )
    run = f"cd ~/synthjax && {common.shell(job)}"
    return {
        "state": _gcloud(args, "describe", args.name, "--format=value(state)"),
        "create": create,
        "delete": _gcloud(args, "delete", args.name, "--quiet"),
        "archive": [
            "git",
            "-C",
            str(common.REPO),
            "archive",
            "--format=tar.gz",
            "-o",
            "/tmp/synthjax.tar.gz",
            "HEAD",
        ],
        "copy": _gcloud(
            args, "scp", "/tmp/synthjax.tar.gz", f"{args.name}:~/synthjax.tar.gz", "--worker=all"
        ),
        "install": _gcloud(args, "ssh", args.name, "--worker=all", f"--command={INSTALL}"),
        "run": _gcloud(args, "ssh", args.name, "--worker=all", f"--command={run}"),
    }


def vm_state(args: argparse.Namespace, cmds: dict[str, list[str]]) -> str:
    probe = subprocess.run(cmds["state"], capture_output=True, text=True, check=False)
    return probe.stdout.strip() if probe.returncode == 0 else "NOT_FOUND"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    cmds = commands(args)
    stages = common.stages_of(args.config, args.override)
    kind = "spot" if args.spot else "preemptible" if args.preemptible else "on-demand"
    print(
        f"TPU VM {args.name} ({args.accelerator_type}, {kind}, {args.zone}): "
        f"{args.config} -> {args.workdir}; stages {', '.join(stages)}"
    )
    if args.dry_run:
        for step in ("state", "create", "archive", "copy", "install", "run"):
            common.say(step, cmds[step])
        common.say("check", f"every stage's summary.json under {args.workdir}, else relaunch")
        if args.delete_when_done:
            common.say("delete", cmds["delete"])
        return 0
    for attempt in range(1, args.max_attempts + 1):
        if common.finished(args.workdir, stages):
            break
        state = vm_state(args, cmds)
        print(f"attempt {attempt}/{args.max_attempts}: VM state {state}", flush=True)
        if state in ("PREEMPTED", "TERMINATED", "STOPPED"):
            common.execute("delete", cmds["delete"], dry_run=False)
            state = "NOT_FOUND"
        if state == "NOT_FOUND":
            common.execute("create", cmds["create"], dry_run=False)
        common.execute("archive", cmds["archive"], dry_run=False)
        common.execute("copy", cmds["copy"], dry_run=False)
        common.execute("install", cmds["install"], dry_run=False)
        status = common.execute("run", cmds["run"], dry_run=False, check=False)
        print(f"attempt {attempt}: the job ended with status {status}", flush=True)
        if status == 2:  # synthjax refused the config: relaunching cannot help
            raise SystemExit("the job refused its config (exit status 2); see its output")
        time.sleep(10)
    done = common.finished(args.workdir, stages)
    if done and args.delete_when_done:
        common.execute("delete", cmds["delete"], dry_run=False)
    print("finished" if done else f"not finished after {args.max_attempts} attempts")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
