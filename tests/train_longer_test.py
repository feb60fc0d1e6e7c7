"""Training a finished GAN longer: rerunning with more `gan.train_steps` resumes it from its
last checkpoint (to the same fingerprint as a run trained straight to that length) and sets
the stale later results aside instead of deleting them."""

import json
from pathlib import Path

import pytest

from synthjax import experiment
from synthjax.core.config_files import load
from synthjax.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/quickstart.py:smoke"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The phantom, the prepared shards and the compilation cache, shared by every run."""
    return tmp_path_factory.mktemp("shared")


def _config(shared, train_steps, stages=("prepare", "gan")):
    config = load(str(REPO / CONFIG))
    config.stages = stages
    config.gan.fd.every_kimg = 0  # no model selection: classifier_real is not needed
    config.gan.train_steps = train_steps
    config.dataset.phantom.dir = str(shared / "phantoms")
    config.dataset.data_dir = str(shared / "data")
    config.compilation_cache = str(shared / "compilation_cache")
    return config


def _summary(workdir, stage="gan"):
    return json.loads((workdir / stage / "summary.json").read_text())


def _fake_later_results(workdir):
    """What the later stages of the 10-step GAN left (only their marker files)."""
    (workdir / "synthesize").mkdir()
    (workdir / "synthesize" / "summary.json").write_text('{"stage": "synthesize"}\n')
    (workdir / "synthetic").mkdir()
    (workdir / "synthetic" / "DATASET_CARD.json").write_text("{}\n")
    (workdir / "report.json").write_text("{}\n")
    (workdir / "report_auroc.png").write_bytes(b"png")


@pytest.fixture(scope="module")
def extended(shared, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("extended")
    first = experiment.run(_config(shared, 10), str(workdir))["gan"]
    assert first["step"] == 10 and not first["early_stopped"]
    _fake_later_results(workdir)
    second = experiment.run(_config(shared, 16), str(workdir))["gan"]
    return workdir, first, second


def test_a_longer_gan_resumes_and_sets_the_earlier_results_aside(extended, shared, capsys):
    workdir, first, second = extended
    assert second["step"] == 16 and _summary(workdir)["step"] == 16
    assert second["state_sha256"] not in (None, first["state_sha256"])
    old = json.loads((workdir / "gan" / "summary.step_10.json").read_text())
    assert old["step"] == 10 and old["state_sha256"] == first["state_sha256"]
    superseded = workdir / "superseded" / "gan_step_10"
    assert json.loads((superseded / "synthesize" / "summary.json").read_text()) == {
        "stage": "synthesize"
    }
    assert (superseded / "synthetic" / "DATASET_CARD.json").is_file()
    assert (superseded / "report.json").is_file() and (superseded / "report_auroc.png").is_file()
    for moved in ("synthesize", "synthetic", "report.json", "report_auroc.png"):
        assert not (workdir / moved).exists(), moved
    # The same length again: finished, nothing moves.
    capsys.readouterr()
    again = experiment.run(_config(shared, 16), str(workdir))["gan"]
    assert again == _summary(workdir) and again["step"] == 16
    assert "moved" not in capsys.readouterr().out
    assert sorted(p.name for p in (workdir / "superseded").iterdir()) == ["gan_step_10"]


def test_the_resumed_gan_equals_one_trained_straight_to_that_length(extended, shared, tmp_path):
    _, _, second = extended
    straight = experiment.run(_config(shared, 16), str(tmp_path / "straight"))["gan"]
    assert straight["step"] == 16
    assert second["state_sha256"] == straight["state_sha256"]


def _finished_gan(workdir, *, step, early_stopped):
    """A workdir whose gan stage looks finished (no training needed to test the refusals)."""
    (workdir / "gan").mkdir(parents=True)
    summary = {"stage": "gan", "step": step, "state_sha256": "x", "early_stopped": early_stopped}
    (workdir / "gan" / "summary.json").write_text(json.dumps(summary))
    (workdir / "synthesize").mkdir()
    (workdir / "synthesize" / "summary.json").write_text('{"stage": "synthesize"}\n')
    return summary


def _unchanged(workdir, summary):
    assert _summary(workdir) == summary
    assert (workdir / "synthesize" / "summary.json").is_file()
    assert not (workdir / "superseded").exists()


@pytest.mark.parametrize(
    "early_stopped,asked,said",
    [(True, 16, "stopped early at step 10"), (False, 6, "longer than the 6 steps")],
    ids=["early_stopped", "longer_than_asked"],
)
def test_a_finished_gan_that_needs_no_more_steps_stays_finished(
    shared, tmp_path, capsys, early_stopped, asked, said
):
    """An early-stopped GAN, or one already longer than asked (with a warning)."""
    summary = _finished_gan(tmp_path, step=10, early_stopped=early_stopped)
    out = experiment.run(_config(shared, asked, stages=("gan",)), str(tmp_path))
    assert out["gan"] == summary
    _unchanged(tmp_path, summary)
    assert said in capsys.readouterr().out


def test_a_longer_gan_without_its_checkpoints_is_refused_before_moving_anything(shared, tmp_path):
    summary = _finished_gan(tmp_path, step=10, early_stopped=False)
    with pytest.raises(ConfigError, match="no checkpoint to resume it from"):
        experiment.run(_config(shared, 16, stages=("gan",)), str(tmp_path))
    _unchanged(tmp_path, summary)
