"""Test setup: four forced CPU devices, set before JAX is imported anywhere; and the smoke
pipeline, run once per session and shared by the tests that read its workdir (end to end,
export, release gate)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/quickstart.py:smoke"


def _command(workdir, cache, *overrides):
    return [
        sys.executable,
        "-m",
        "synthjax.main",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--config.compilation_cache={cache}",
        *overrides,
    ]


def _env():
    env = dict(os.environ)
    # The job as a user runs it, on one CPU device; compiled with XLA's cheapest settings,
    # several times faster to compile (these tests compare runs with each other, not speed).
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    return env


def _run(workdir, cache, *overrides, timeout=900):
    proc = subprocess.run(
        _command(workdir, cache, *overrides),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _summary(workdir, stage):
    return json.loads((Path(workdir) / stage / "summary.json").read_text())


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("compilation_cache")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, cache_dir):
    # Started elsewhere, with a relative workdir and config path, as users do.
    cwd = tmp_path_factory.mktemp("elsewhere")
    command = _command("smoke", cache_dir)
    command[3] = f"--config={REPO / CONFIG}"
    proc = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return cwd / "smoke", proc


# Whole-pipeline tests: they run the job (or several) in subprocesses and take most of the
# suite's time. `pytest -m "not e2e and not slow"` leaves the unit tier.
E2E_MODULES = {"e2e_test", "gcs_test", "multihost_test", "train_longer_test", "notebook_test"}
E2E_FIXTURES = {"smoke_run"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in E2E_MODULES or E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
