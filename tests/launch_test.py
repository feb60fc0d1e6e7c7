"""The launchers' dry runs (what they would run, checked inputs) and sweep expansion."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launch import common, local, slurm, sweep, tpu_vm

CONFIG = "configs/quickstart.py:smoke"


def _finish(workdir, stages):
    for stage in stages:
        (workdir / stage).mkdir(parents=True, exist_ok=True)
        (workdir / stage / "summary.json").write_text("{}")


# --- sweeps ---------------------------------------------------------------------------------


def test_sweep_expands_into_named_runs_with_their_overrides(tmp_path):
    runs = sweep.expand(CONFIG, str(tmp_path))
    assert [r["name"] for r in runs] == [
        "samples_per_class-35_arch-cpd",
        "samples_per_class-35_arch-prog",
        "samples_per_class-70_arch-cpd",
        "samples_per_class-70_arch-prog",
    ]
    assert runs[1]["overrides"] == [
        f"dataset.data_dir={tmp_path}/data",  # every run shares the prepared data
        f"dataset.phantom.dir={tmp_path}/phantoms",  # and the phantoms
        "dataset.samples_per_class=35",
        "gan.arch=prog",
    ]
    assert runs[1]["workdir"] == f"{tmp_path}/samples_per_class-35_arch-prog"


def test_override_text_and_names_of_tuples_and_strings():
    assert sweep.override_text("stages", ("prepare", "gan")) == "stages=('prepare', 'gan')"
    assert sweep.override_text("gan.arch", "prog") == "gan.arch=prog"
    assert sweep.override_text("gan.train_kimg", 51.2) == "gan.train_kimg=51.2"
    assert (
        sweep.run_name({"stages": ("prepare", "gan"), "a.b": "x/y"}) == "stages-prepare-gan_b-x_y"
    )


def test_sweep_skips_finished_runs_and_runs_the_rest_in_order(tmp_path, capsys):
    stages = common.stages_of(CONFIG)
    _finish(tmp_path / "samples_per_class-35_arch-prog", stages)
    _finish(tmp_path / "samples_per_class-70_arch-cpd", stages[:-1])  # not the last stage
    assert sweep.main([f"--config={CONFIG}", f"--workdir={tmp_path}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "finished  samples_per_class-35_arch-prog" in out
    assert "to run    samples_per_class-70_arch-cpd" in out
    commands = [line for line in out.splitlines() if line.startswith("[")]
    assert len(commands) == 3
    assert commands[0].startswith("[1/3 samples_per_class-35_arch-cpd]")
    assert "-m synthjax.main --config=configs/quickstart.py:smoke" in commands[0]
    assert f"--workdir={tmp_path}/samples_per_class-70_arch-prog" in commands[2]
    assert "--config.gan.arch=prog" in commands[2]
    assert not (tmp_path / "sweep.json").exists()  # a dry run writes nothing


def test_sweep_hands_runs_to_a_cloud_launcher_and_checks_names(tmp_path, capsys):
    args = [f"--config={CONFIG}", f"--workdir={tmp_path}", "--via=slurm", "--dry-run"]
    sweep.main([*args, "--only=samples_per_class-35_arch-cpd", "--", "--nodes=2"])
    out = capsys.readouterr().out
    assert "-m launch.slurm" in out and "--nodes=2" in out and "--dry-run" in out
    assert "--override=gan.arch=cpd" in out
    with pytest.raises(SystemExit):
        sweep.main([*args, "--only=nope"])
    assert "no runs named ['nope']" in capsys.readouterr().err


def test_sweep_runs_locally_and_writes_its_index(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(common.subprocess, "call", lambda cmd: ran.append(cmd) or 0)
    sweep.main([f"--config={CONFIG}", f"--workdir={tmp_path}"])
    assert len(ran) == 4 and ran[0][:3] == [sys.executable, "-m", "synthjax.main"]
    index = json.loads((tmp_path / "sweep.json").read_text())
    assert index["config"] == CONFIG and len(index["runs"]) == 4


def test_a_config_without_a_sweep_is_refused(capsys):
    with pytest.raises(SystemExit):
        sweep.load_sweep("configs/cxr_256.py")
    assert "defines no get_sweep" in capsys.readouterr().err


# --- TPU VMs ----------------------------------------------------------------------------------


TPU = [
    "--name=cxr256",
    "--zone=us-central2-b",
    "--accelerator-type=v4-32",
    "--config=configs/cxr_256.py",
    "--workdir=gs://bucket/runs/cxr256",
]


def test_tpu_dry_run_prints_create_install_and_run_on_every_worker(capsys):
    assert tpu_vm.main([*TPU, "--spot", "--override=gan.train_kimg=100.0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = {line.split("]")[0][1:]: line for line in out.splitlines() if line.startswith("[")}
    assert set(lines) >= {"state", "create", "archive", "copy", "install", "run", "check"}
    assert "tpu-vm create cxr256 --accelerator-type=v4-32" in lines["create"]
    assert "--spot" in lines["create"] and "--zone=us-central2-b" in lines["create"]
    assert "--worker=all" in lines["install"] and "[tpu]" in lines["install"]
    run = lines["run"]
    assert "--worker=all" in run and "--distributed=on" in run
    assert "--workdir=gs://bucket/runs/cxr256" in run and "--config.gan.train_kimg=100.0" in run


@pytest.mark.parametrize(
    "change, message",
    [
        ("--workdir=/home/me/run", "lost on preemption"),
        ("--accelerator-type=a100", "not a TPU type"),
        ("--name=My_VM", "lowercase"),
        ("--config=configs/nope.py", "no config file"),
    ],
)
def test_tpu_launcher_refuses_bad_inputs(change, message, capsys):
    key = change.split("=")[0]
    argv = [a for a in TPU if not a.startswith(key + "=")] + [change, "--dry-run"]
    with pytest.raises(SystemExit) as stop:
        tpu_vm.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_tpu_relaunches_after_preemption_until_finished(tmp_path, monkeypatch):
    """A fake gcloud: the first run is preempted, the second finishes the run."""
    calls, runs = [], []
    monkeypatch.setattr(tpu_vm.time, "sleep", lambda s: None)
    monkeypatch.setattr(tpu_vm, "vm_state", lambda a, c: "READY" if runs else "NOT_FOUND")
    stages = common.stages_of("configs/cxr_256.py")

    def fake_call(cmd):
        calls.append(cmd)
        if "ssh" in cmd and any(c.startswith("--command=cd ~/synthjax") for c in cmd):
            runs.append(cmd)
            if len(runs) == 2:
                _finish(tmp_path, stages)
        return 0

    monkeypatch.setattr(common.subprocess, "call", fake_call)
    monkeypatch.setattr(
        common,
        "finished",
        lambda workdir, st: all((tmp_path / s / "summary.json").exists() for s in st),
    )
    assert tpu_vm.main(TPU) == 0
    assert len(runs) == 2
    assert sum("create" in c for c in calls) == 1  # the second attempt found the VM READY


# --- SLURM ------------------------------------------------------------------------------------


def test_slurm_script_runs_one_process_per_gpu_and_requeues(capsys):
    argv = [
        "--config=configs/cxr_256.py",
        "--workdir=/shared/runs/x",
        "--nodes=2",
        "--gpus-per-node=4",
        "--partition=gpu",
        "--dry-run",
    ]
    assert slurm.main(argv) == 0
    out = capsys.readouterr().out
    assert "8 process(es)" in out
    for directive in (
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--requeue",
        "--signal=B:TERM@300",
        "--partition=gpu",
    ):
        assert f"#SBATCH {directive}" in out
    # Every task sees its node's GPUs; JAX gives each the one of its local rank.
    assert "srun --kill-on-bad-exit=1 python -m synthjax.main" in out
    assert "--gpus-per-task" not in out and "--local_device_ids" not in out
    assert "--distributed=on" in out and "scontrol requeue" in out
    assert "if python -m launch.common finished /shared/runs/x prepare " in out


def test_slurm_script_per_node_and_its_syntax(tmp_path):
    args = slurm.parse(["--config=configs/cxr_256.py", f"--workdir={tmp_path}", "--per=node"])
    script = slurm.batch_script(args)
    assert "#SBATCH --ntasks-per-node=1" in script and "--gpus-per-task" not in script
    assert "--local_device_ids=0,1,2,3,4,5,6,7" in script  # one task drives all 8 GPUs
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0  # it parses


def test_slurm_finished_test_works_on_local_and_bucket_workdirs(tmp_path, monkeypatch):
    """The batch script's `python -m launch.common finished`: a local workdir by its
    readable summaries (an empty one, left by a crash, is not finished); a bucket through
    `gcloud storage ls` (stubbed: no bucket here)."""
    stages = ["prepare", "gan"]
    for stage in stages:
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "summary.json").write_text('{"stage": "x"}')
    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "launch.common", "finished", str(tmp_path), *stages]
    assert subprocess.run(command, cwd=repo).returncode == 0
    (tmp_path / "gan" / "summary.json").write_text("")
    assert subprocess.run(command, cwd=repo).returncode == 1
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="\n".join(command[3:]), stderr="")

    monkeypatch.setattr(common.subprocess, "run", fake_run)
    assert common.finished("gs://bucket/run", stages)
    assert calls[0] == [
        "gcloud",
        "storage",
        "ls",
        "gs://bucket/run/prepare/summary.json",
        "gs://bucket/run/gan/summary.json",
    ]


def test_slurm_refuses_a_workdir_with_spaces(capsys):
    with pytest.raises(common.LaunchError):
        slurm.parse(["--config=configs/cxr_256.py", "--workdir=/runs/my run"])
    assert "use a path without spaces" in capsys.readouterr().err


def test_slurm_refuses_a_bad_time(capsys):
    with pytest.raises(SystemExit):
        slurm.main(["--config=configs/cxr_256.py", "--workdir=/w", "--time=soon", "--dry-run"])
    assert "--time" in capsys.readouterr().err


# --- this machine -----------------------------------------------------------------------------


def test_local_plan_connects_processes_over_loopback(capsys):
    argv = [
        f"--config={CONFIG}",
        "--workdir=/tmp/x",
        "--processes=2",
        "--cpu-devices=2",
        "--port=12345",
        "--dry-run",
    ]
    assert local.main(argv) == 0
    out = capsys.readouterr().out
    for i in (0, 1):
        assert (
            f"[process {i}] JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2"
            in out
        )
        assert f"--process_id={i}" in out
    assert out.count("--coordinator_address=127.0.0.1:12345") == 2
    plan = local.process_plan(local.parse([f"--config={CONFIG}", "--workdir=/w"]), 0)
    assert len(plan) == 1 and not any("--process_id" in c for c in plan[0][1])
