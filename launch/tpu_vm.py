r"""Cloud TPU VMs: create a (spot) TPU VM or pod slice, install synthjax on every worker, start
the job there detached from this machine, and watch it until every stage has finished,
relaunching after preemption.

  python -m launch.tpu_vm --name=cxr256 --zone=us-central2-b --accelerator-type=v4-32 \
      --config=configs/cxr_256.py --workdir=gs://my-bucket/runs/cxr256 --spot --dry-run

What it does, each action printed before it runs (`--dry-run` prints them and stops):
1. `gcloud compute tpus tpu-vm create` (with `--spot` or `--preemptible`) unless the VM is
   already there, with the runtime image of its TPU generation (`--version` overrides it);
2. copies this checkout (`git archive HEAD`) and a small job script to every worker, and
   installs synthjax into `~/synthjax-venv`, a Python 3.11 made with uv (the images ship
   Python 3.10; uv itself is installed with the image's pip, for this user only);
3. starts the job on every worker with `nohup setsid`: it no longer depends on the SSH session
   or on this launcher. Its output goes to `~/synthjax-run/job.log` on the worker and to
   `WORKDIR/logs/attempt<K>/worker<N>.log` (every minute, and when the job ends);
4. every `--poll-seconds` asks for the VM's state, whether the job still runs on the workers
   (`bash ~/synthjax-job.sh status`) and whether every stage wrote its summary.json.

The job script and the install command are in `launch/tpu_job.py`; how an attempt ended
(preempted, failed, refused) is read by `launch/tpu_endings.py`.

Stop the launcher (Ctrl-C, a dropped connection) at any time: the job keeps running, and the
same command started again finds it and goes on watching. When the job has ended:
- the run is finished: done (`--delete-when-done` deletes the VM);
- the VM was preempted (PREEMPTED or gone), the job was killed by a signal, or it saved and
  exited 0 ("Rerun the same command"): relaunch, on a recreated VM if needed;
- it failed (another exit status): relaunch, unless the previous failure was the same error
  at the same step (the last traceback's final line and the last step the log names): that
  will not go away by retrying, so the launcher stops (exit status 1) and says where the log
  is. A config the job refuses (exit status 2) stops at once.
At most `--max-attempts` starts in all. The workdir must be a bucket (`gs://...`): the VM's
disk goes with the VM. Each attempt resumes from the run's last checkpoint.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from launch import common
from launch.tpu_endings import Worker, classify, describe, parse_status
from launch.tpu_job import ARCHIVE, SCRIPT, install_command, job_arguments, job_script

# The runtime image (TPU software version) for JAX per TPU generation, as in the Cloud TPU
# documentation's table of TPU software versions; all of them ship Python 3.10.
RUNTIMES = (
    ("v6e-", "v2-alpha-tpuv6e"),
    ("v5p-", "v2-alpha-tpuv5"),
    ("v5litepod-", "v2-alpha-tpuv5-lite"),
    ("v4-", "tpu-ubuntu2204-base"),
    ("v3-", "tpu-ubuntu2204-base"),
    ("v2-", "tpu-ubuntu2204-base"),
)
# VM states after which the VM must be deleted (if still listed) and created again.
GONE = ("PREEMPTED", "TERMINATED", "STOPPED", "NOT_FOUND")
# Polls for which some workers' jobs may have ended while others still run (a process that
# died can leave the others waiting for it) before the others are told to stop.
STRAGGLER_POLLS = 10
# Attempts in a row whose copy or install failed before the launcher gives up.
LAUNCH_FAILURES = 3


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="TPU VM name")
    p.add_argument("--zone", required=True)
    p.add_argument("--accelerator-type", required=True, help="e.g. v4-8, v5litepod-16, v6e-8")
    p.add_argument(
        "--version", default=None, help="runtime image (default: the one of the TPU generation)"
    )
    p.add_argument("--project", default=None)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--spot", action="store_true", help="a spot VM (cheaper, preemptible)")
    kind.add_argument("--preemptible", action="store_true")
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True, help="gs://bucket/path (must outlive the VM)")
    p.add_argument("--override", action="append", default=[], help="field=value, repeatable")
    p.add_argument("--max-attempts", type=int, default=20, help="starts of the job in all")
    p.add_argument("--poll-seconds", type=float, default=60.0)
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
    if not args.workdir.startswith("gs://") or re.search(r"\s", args.workdir):
        raise common.LaunchError(
            f"--workdir {args.workdir!r}: a TPU VM's disk is lost on preemption; use gs://... "
            "(without spaces)"
        )
    if args.max_attempts < 1:
        raise common.LaunchError("--max-attempts must be at least 1")
    if args.poll_seconds <= 0:
        raise common.LaunchError("--poll-seconds must be positive")
    args.version = args.version or runtime_version(args.accelerator_type)
    return args


def runtime_version(accelerator_type: str) -> str:
    """The runtime image for JAX on a TPU type: v6e-*, v5p-*, v5litepod-* (v5e), v2-v4."""
    for prefix, version in RUNTIMES:
        if accelerator_type.startswith(prefix):
            return version
    raise common.LaunchError(
        f"--accelerator-type {accelerator_type!r}: no default runtime image for this TPU "
        "generation; give one with --version"
    )


# --- gcloud commands --------------------------------------------------------------------------


def _gcloud(args: argparse.Namespace, *words: str) -> list[str]:
    command = ["gcloud", "compute", "tpus", "tpu-vm", *words, f"--zone={args.zone}"]
    return command + ([f"--project={args.project}"] if args.project else [])


def _on_workers(args: argparse.Namespace, remote: str) -> list[str]:
    return _gcloud(args, "ssh", args.name, "--worker=all", f"--command={remote}")


def logs_url(args: argparse.Namespace) -> str:
    return f"{args.workdir.rstrip('/')}/logs"


def staging_dir(args: argparse.Namespace) -> Path:
    """Where the archive and the job script are written on this machine before the copy."""
    return Path(tempfile.gettempdir()) / f"synthjax-{args.name}"


def start_command(args: argparse.Namespace, attempt: int) -> list[str]:
    return _on_workers(args, f"bash ~/{SCRIPT} start {attempt}")


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """Every gcloud command the launcher runs, by step (`start_command` starts an attempt)."""
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
    stage = staging_dir(args)
    status = (
        f"if [ -f ~/{SCRIPT} ]; then bash ~/{SCRIPT} status; "
        'else echo "synthjax-job $(hostname) state=none"; fi'
    )
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
            str(stage / ARCHIVE),
            "HEAD",
        ],
        "copy": _gcloud(
            args,
            "scp",
            str(stage / ARCHIVE),
            str(stage / SCRIPT),
            f"{args.name}:~/",
            "--worker=all",
        ),
        "install": _on_workers(args, install_command()),
        "status": _on_workers(args, status),
        "stop": _on_workers(args, f"bash ~/{SCRIPT} stop"),
        "list-logs": ["gcloud", "storage", "ls", f"{logs_url(args)}/"],
    }


def probe(command: Sequence[str]) -> subprocess.CompletedProcess:
    """Runs a command that only reads (a state, the workers' status, a file in the bucket)."""
    return subprocess.run(list(command), capture_output=True, text=True, check=False)


def vm_state(cmds: dict[str, list[str]]) -> str:
    """READY, PREEMPTED, CREATING, ... ; NOT_FOUND when there is no such VM; UNKNOWN when
    gcloud could not tell (no network, say)."""
    answer = probe(cmds["state"])
    if answer.returncode == 0:
        return answer.stdout.strip() or "UNKNOWN"
    return "NOT_FOUND" if "NOT_FOUND" in answer.stderr.upper().replace(" ", "_") else "UNKNOWN"


def read_bucket(url: str) -> str:
    """A small file in the bucket (a log's tail), or "" when it is not there."""
    answer = probe(["gcloud", "storage", "cat", url])
    return answer.stdout if answer.returncode == 0 else ""


def last_attempt_in_bucket(cmds: dict[str, list[str]]) -> int:
    """The highest K of the workdir's `logs/attempt<K>/`: where a restarted launcher goes on."""
    answer = probe(cmds["list-logs"])
    found = re.findall(r"/attempt(\d+)/", answer.stdout) if answer.returncode == 0 else []
    return max(map(int, found), default=0)


def job_status(cmds: dict[str, list[str]]) -> list[Worker] | None:
    """Every worker's job, or None when the workers could not all be reached."""
    answer = probe(cmds["status"])
    workers = parse_status(answer.stdout) if answer.returncode == 0 else []
    return workers or None


# --- the launcher -----------------------------------------------------------------------------


class Launcher:
    """Watches one run: each `step` looks at the VM, the job and the workdir, and acts."""

    def __init__(self, args: argparse.Namespace, stages: Sequence[str]):
        self.args = args
        self.stages = list(stages)
        self.cmds = commands(args)
        self.logs = logs_url(args)
        self.attempt = 0  # the last attempt started, by this launcher or an earlier one
        self.handled = 0  # the last attempt whose ending was acted on
        self.last_failure: tuple[str, int | None] | None = None
        self.failed_launches = 0
        self.failed_creates = 0
        self.straggling = 0
        self._last_note = ""

    def run(self) -> int:
        """Steps every `--poll-seconds` until the run is finished (0) or given up (1)."""
        self.attempt = last_attempt_in_bucket(self.cmds)
        while True:
            result = self.step()
            if result is not None:
                return result
            time.sleep(self.args.poll_seconds)

    def step(self) -> int | None:
        """One look and what follows from it; an exit status when the launcher is done."""
        if common.finished(self.args.workdir, self.stages):
            return self.done()
        state = vm_state(self.cmds)
        if state in GONE:
            return self.recreate(state)
        if state != "READY":
            self.note(f"VM {self.args.name} is {state}; waiting")
            return None
        workers = job_status(self.cmds)
        if workers is None:
            self.note("could not reach every worker; trying again at the next poll")
            return None
        return self.follow(workers)

    def follow(self, workers: list[Worker]) -> int | None:
        """The VM is READY: watch a running job, act on an ended one, or start one."""
        foreign = [w for w in workers if w.logs not in (None, self.logs)]
        if any(w.state == "running" for w in foreign):
            print(
                f"VM {self.args.name} runs another job (logs to {foreign[0].logs}); "
                "give this run another --name",
                file=sys.stderr,
            )
            return 1
        ours = [w for w in workers if w.logs == self.logs]
        self.attempt = max([self.attempt, *(w.attempt for w in ours)])
        running = [w for w in ours if w.state == "running"]
        ended = [w for w in ours if w.state in ("exited", "lost")]
        if running:
            return self.watch(running, ended)
        if ended and max(w.attempt for w in ended) > self.handled:
            result = self.judge(ended)
            if result is not None:
                return result
        return self.launch()

    def watch(self, running: list[Worker], ended: list[Worker]) -> None:
        self.straggling = self.straggling + 1 if ended else 0
        self.note(f"attempt {self.attempt}: running on {len(running)} worker(s)")
        if self.straggling >= STRAGGLER_POLLS:
            print(
                f"attempt {self.attempt}: ended on {', '.join(w.name for w in ended)} but "
                "still running elsewhere; stopping it everywhere",
                flush=True,
            )
            common.execute("stop", self.cmds["stop"], dry_run=False, check=False)
            self.straggling = 0

    def judge(self, ended: list[Worker]) -> int | None:
        """Acts on an attempt that ended: an exit status to stop with, or None to relaunch."""
        if common.finished(self.args.workdir, self.stages):
            return self.done()
        attempt = max(w.attempt for w in ended)
        self.handled = attempt
        codes = ", ".join(f"{w.name} {w.code if w.state == 'exited' else 'lost'}" for w in ended)
        print(f"attempt {attempt} ended (exit status: {codes})", flush=True)
        end = classify(ended, lambda w: read_bucket(f"{self.logs}/attempt{attempt}/{w.name}.tail"))
        log = f"{self.logs}/attempt{attempt}/{end.worker}.log"
        if end.kind == "refused":
            print(
                f"the job refused its config: {end.signature[0]}\nfull log: {log}", file=sys.stderr
            )
            return 1
        if end.kind == "failed":
            print(f"attempt {attempt} failed on {end.worker}: {describe(end.signature)}")
            if end.signature == self.last_failure:
                print(
                    f"stopping: the same error at the same step as the failure before, so "
                    f"retrying will not help: {describe(end.signature)}\nfull log: {log} "
                    f"(on the worker: ~/synthjax-run/job.log)",
                    file=sys.stderr,
                )
                return 1
            self.last_failure = end.signature
        else:
            print(f"attempt {attempt} was preempted or stopped; relaunching", flush=True)
        return None

    def recreate(self, state: str) -> int | None:
        """The VM was preempted or is gone: delete what is left, create it, launch again."""
        if self.attempt >= self.args.max_attempts:
            return self.give_up()
        print(f"VM {self.args.name} is {state}", flush=True)
        if state != "NOT_FOUND":
            common.execute("delete", self.cmds["delete"], dry_run=False, check=False)
        if common.execute("create", self.cmds["create"], dry_run=False, check=False) != 0:
            self.failed_creates += 1
            if self.failed_creates >= self.args.max_attempts:
                print(f"could not create the VM {self.failed_creates} times", file=sys.stderr)
                return 1
            return None
        self.failed_creates = 0
        return self.launch()

    def launch(self) -> int | None:
        """Copies the checkout and the job script, installs, starts the next attempt."""
        if self.attempt >= self.args.max_attempts:
            return self.give_up()
        attempt = self.attempt + 1
        stage = staging_dir(self.args)
        stage.mkdir(parents=True, exist_ok=True)
        (stage / SCRIPT).write_text(job_script(job_arguments(self.args), self.logs))
        for step in ("archive", "copy", "install"):
            if common.execute(step, self.cmds[step], dry_run=False, check=False) != 0:
                self.failed_launches += 1
                if self.failed_launches >= LAUNCH_FAILURES:
                    print(f"[{step}] failed {self.failed_launches} times in a row", file=sys.stderr)
                    return 1
                return None
        self.failed_launches = 0
        common.execute("start", start_command(self.args, attempt), dry_run=False, check=False)
        self.handled, self.attempt = self.attempt, attempt  # what ended before is dealt with
        print(f"attempt {attempt} started; logs: {self.logs}/attempt{attempt}/", flush=True)
        return None

    def give_up(self) -> int:
        print(f"not finished after {self.args.max_attempts} attempts", file=sys.stderr)
        return 1

    def done(self) -> int:
        if self.args.delete_when_done:
            common.execute("delete", self.cmds["delete"], dry_run=False, check=False)
        print(f"finished: every stage's summary.json is in {self.args.workdir}")
        return 0

    def note(self, text: str) -> None:
        """Prints a poll's news once, not at every poll."""
        if text != self._last_note:
            print(text, flush=True)
            self._last_note = text


def show(args: argparse.Namespace, cmds: dict[str, list[str]], stages: Sequence[str]) -> None:
    """`--dry-run`: every command, the job script, and what the launcher polls."""
    common.say("state", cmds["state"])
    common.say("create", cmds["create"])
    common.say("archive", cmds["archive"])
    script = job_script(job_arguments(args), logs_url(args))
    common.say("script", f"{staging_dir(args) / SCRIPT}:")
    print("\n".join(f"    {line}" if line else "" for line in script.splitlines()))
    for step in ("copy", "install"):
        common.say(step, cmds[step])
    common.say("start", start_command(args, 1))
    common.say("logs", f"{logs_url(args)}/attempt<K>/worker<N>.log, .tail, .exit")
    common.say(
        "poll",
        f"every {args.poll_seconds:g} s until finished: [state] above, [status] and [check] "
        "below; a job still running is left alone, an ended one relaunched",
    )
    common.say("status", cmds["status"])
    finished = ["python", "-m", "launch.common", "finished", args.workdir, *stages]
    common.say("check", f"{common.shell(finished)} (in this process)")
    common.say("stop", f"{common.shell(cmds['stop'])} (only if some workers hang)")
    if args.delete_when_done:
        common.say("delete", cmds["delete"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    cmds = commands(args)
    stages = common.stages_of(args.config, args.override)
    kind = "spot" if args.spot else "preemptible" if args.preemptible else "on-demand"
    print(
        f"TPU VM {args.name} ({args.accelerator_type}, {kind}, {args.version}, {args.zone}): "
        f"{args.config} -> {args.workdir}; stages {', '.join(stages)}"
    )
    if args.dry_run:
        show(args, cmds, stages)
        return 0
    return Launcher(args, stages).run()


if __name__ == "__main__":
    sys.exit(main())
