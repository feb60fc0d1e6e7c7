"""The study's classifier protocol end to end: the schema's refusals, and the classifier
stages run under it (a tiny one on the phantom; DenseNet-121 at 224 from a weights file in
the slow tier)."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthjax import schema
from synthjax.core.errors import ConfigError
from tests.densenet_weights_test import _load_script, torchvision_state_dict

REPO = Path(__file__).resolve().parents[1]


def _smoke():
    return importlib.import_module("configs.quickstart").get_config("smoke")


def test_the_default_protocol_is_todays():
    c = importlib.import_module("configs.default").get_config()
    assert (c.classifier.protocol, c.classifier.weights, c.classifier.augment) == (
        "synthjax",
        "",
        False,
    )
    assert c.classifier.input_resolution == 224


@pytest.mark.parametrize(
    "changes,field,match",
    [
        ({"protocol": "imagenet"}, "classifier.protocol", "not a protocol"),
        ({"protocol": "study", "input_resolution": 16}, "classifier.input_resolution", "32"),
        ({"input_resolution": 0}, "classifier.input_resolution", "at least 32"),
        ({"weights": "w.npz"}, "classifier.weights", "protocol=study"),
        (
            {"weights": "w.npz", "protocol": "study", "arch": "densenet_narrow"},
            "classifier.weights",
            "arch=densenet121",
        ),
        (
            {"weights": "/nowhere/w.npz", "protocol": "study", "arch": "densenet121"},
            "classifier.weights",
            "scripts/convert_densenet121.py",
        ),
    ],
)
def test_impossible_protocol_values_are_refused(changes, field, match):
    config = _smoke()
    with config.unlocked():
        for name, value in changes.items():
            config.classifier[name] = value
    with pytest.raises(ConfigError, match=match) as err:
        schema.validate(config, num_devices=4)
    assert field in str(err.value) and "Fix:" in str(err.value)


def test_a_weights_file_that_exists_is_accepted(tmp_path):
    config = _smoke()
    (tmp_path / "w.npz").write_bytes(b"")
    config.classifier.update(protocol="study", arch="densenet121", weights=str(tmp_path / "w.npz"))
    schema.validate(config, num_devices=4)


def _run(workdir, *overrides, stages="('prepare','classifier_real')", timeout=900):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    command = [
        sys.executable,
        "-m",
        "synthjax.main",
        "--config=configs/quickstart.py:smoke",
        f"--workdir={workdir}",
        f"--config.stages={stages}",
        *overrides,
    ]
    proc = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc, json.loads((Path(workdir) / "classifier_real" / "summary.json").read_text())


@pytest.mark.e2e
def test_a_study_protocol_run_without_weights_trains_and_says_its_weights_are_random(tmp_path):
    proc, summary = _run(
        tmp_path / "w",
        "--config.classifier.protocol=study",
        "--config.classifier.input_resolution=32",
        "--config.classifier.augment=True",
        stages="('prepare','classifier_real','report')",
    )
    assert summary["protocol"] == {
        "name": "study",
        "input_resolution": 32,
        "augment": True,
        "initial_weights": None,
    }
    assert 0.0 <= summary["test_auroc_mean"] <= 1.0
    assert "RANDOM weights" in proc.stderr
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert report["classifier_protocol"] == summary["protocol"]
    with np.load(tmp_path / "w" / "classifier_real" / "test_predictions.npz") as npz:
        assert np.all(np.isfinite(npz["probs"])) and npz["features"].shape[1] > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_densenet121_at_224_from_a_converted_checkpoint(tmp_path):
    arch = dict(block_sizes=(6, 12, 24, 16), growth_rate=32, num_init_features=64, bn_size=4)
    weights = tmp_path / "densenet121.npz"
    np.savez(weights, **_load_script().convert_state_dict(torchvision_state_dict(0, **arch)))
    proc, summary = _run(
        tmp_path / "w",
        "--config.classifier.protocol=study",
        "--config.classifier.arch=densenet121",
        f"--config.classifier.weights={weights}",
        "--config.classifier.train_steps=10",
        "--config.classifier.eval_every=5",
        timeout=3000,
    )
    assert summary["protocol"]["input_resolution"] == 224
    assert summary["protocol"]["initial_weights"]["file"] == "densenet121.npz"
    assert len(summary["protocol"]["initial_weights"]["sha256"]) == 64
    assert "RANDOM weights" not in proc.stderr and "the head is new" in proc.stderr
