"""The launchers' dry runs (what they would run, checked inputs) and sweep expansion."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launch import common, local, slurm, sweep

CONFIG = "configs/quickstart.py:smoke"


def _finish(workdir, stages):
    for stage in stages:
        (workdir / stage).mkdir(parents=True, exist_ok=True)
        (workdir / stage / "summary.json").write_text("{}")


# --- sweeps ---------------------------------------------------------------------------------


def test_sweep_expands_into_named_runs_with_their_overrides(tmp_path):
    runs = sweep.expand(CONFIG, str(tmp_path))
    settings = [
        "samples_per_class-35_arch-cpd",
        "samples_per_class-35_arch-prog",
        "samples_per_class-70_arch-cpd",
        "samples_per_class-70_arch-prog",
    ]
    # Every setting with each of the default seeds, seeds outermost.
    assert [r["name"] for r in runs] == [
        f"{setting}_seed-{seed}" for seed in sweep.DEFAULT_SEEDS for setting in settings
    ]
    assert runs[1]["overrides"] == [
        f"dataset.data_dir={tmp_path}/data",  # every run shares the prepared data
        f"dataset.phantom.dir={tmp_path}/phantoms",  # and the phantoms
        "dataset.samples_per_class=35",
        "gan.arch=prog",
        "seed=0",
    ]
    assert runs[1]["workdir"] == f"{tmp_path}/samples_per_class-35_arch-prog_seed-0"
    assert (runs[1]["setting"], runs[1]["seed"]) == ("samples_per_class-35_arch-prog", 0)


def test_override_text_and_names_of_tuples_and_strings():
    assert sweep.override_text("stages", ("prepare", "gan")) == "stages=('prepare', 'gan')"
    assert sweep.override_text("gan.arch", "prog") == "gan.arch=prog"
    assert sweep.override_text("gan.train_kimg", 51.2) == "gan.train_kimg=51.2"
    assert (
        sweep.run_name({"stages": ("prepare", "gan"), "a.b": "x/y"}) == "stages-prepare-gan_b-x_y"
    )


def test_sweep_skips_finished_runs_and_runs_the_rest_in_order(tmp_path, capsys):
    stages = common.stages_of(CONFIG)
    _finish(tmp_path / "samples_per_class-35_arch-prog_seed-0", stages)
    _finish(tmp_path / "samples_per_class-70_arch-cpd_seed-0", stages[:-1])  # not the last
    args = [f"--config={CONFIG}", f"--workdir={tmp_path}", "--seeds=0", "--dry-run"]
    assert sweep.main(args) == 0
    out = capsys.readouterr().out
    assert "finished  samples_per_class-35_arch-prog_seed-0" in out
    assert "to run    samples_per_class-70_arch-cpd_seed-0" in out
    commands = [line for line in out.splitlines() if line.startswith("[")]
    assert len(commands) == 3
    assert commands[0].startswith("[1/3 samples_per_class-35_arch-cpd_seed-0]")
    assert "-m synthjax.main --config=configs/quickstart.py:smoke" in commands[0]
    assert f"--workdir={tmp_path}/samples_per_class-70_arch-prog_seed-0" in commands[2]
    assert "--config.gan.arch=prog" in commands[2] and "--config.seed=0" in commands[2]
    assert not (tmp_path / "sweep.json").exists()  # a dry run writes nothing


def test_sweep_hands_runs_to_a_cloud_launcher_and_checks_names(tmp_path, capsys):
    args = [f"--config={CONFIG}", f"--workdir={tmp_path}", "--via=slurm", "--dry-run"]
    sweep.main([*args, "--only=samples_per_class-35_arch-cpd_seed-1", "--", "--nodes=2"])
    out = capsys.readouterr().out
    assert "-m launch.slurm" in out and "--nodes=2" in out and "--dry-run" in out
    assert "--override=gan.arch=cpd" in out and "--override=seed=1" in out
    with pytest.raises(SystemExit):
        sweep.main([*args, "--only=nope"])
    assert "no runs named ['nope']" in capsys.readouterr().err


def test_sweep_runs_locally_and_writes_its_index(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(common.subprocess, "call", lambda cmd: ran.append(cmd) or 0)
    sweep.main([f"--config={CONFIG}", f"--workdir={tmp_path}", "--seeds=0,1"])
    assert len(ran) == 8 and ran[0][:3] == [sys.executable, "-m", "synthjax.main"]
    index = json.loads((tmp_path / "sweep.json").read_text())
    assert index["config"] == CONFIG and len(index["runs"]) == 8
    assert {(r["setting"], r["seed"]) for r in index["runs"]} >= {
        ("samples_per_class-70_arch-prog", 1)
    }
    # Another sweep into the same root adds its runs; a rerun of this one replaces its own.
    sweep.main(["--config=configs/quickstart.py:ct", f"--workdir={tmp_path}", "--seeds=0"])
    sweep.main([f"--config={CONFIG}", f"--workdir={tmp_path}", "--seeds=0"])
    index = json.loads((tmp_path / "sweep.json").read_text())
    assert index["config"] == CONFIG
    by_config = [r["config"] for r in index["runs"]]
    assert by_config.count("configs/quickstart.py:ct") == 4 and by_config.count(CONFIG) == 4


def test_a_config_without_a_sweep_is_refused(capsys):
    with pytest.raises(SystemExit):
        sweep.load_sweep("configs/cxr_256.py")
    assert "defines no get_sweep" in capsys.readouterr().err


# --- SLURM ------------------------------------------------------------------------------------


def test_slurm_script_runs_one_process_per_gpu_and_requeues(capsys):
    argv = (
        "--config=configs/cxr_256.py --workdir=/shared/runs/x --nodes=2 --gpus-per-node=4 "
        "--partition=gpu --dry-run"
    ).split()
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
    argv = [f"--config={CONFIG}", *"--workdir=/tmp/x --processes=2 --cpu-devices=2".split()]
    argv += ["--port=12345", "--dry-run"]
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
