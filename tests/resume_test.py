"""Resuming honestly: a changed config on an existing workdir is refused when it would change
results already made (naming each field and stage), free fields may change, and
`rerun_from=<stage>` sets that stage and every later one aside; state files are written
durably, and an empty or unreadable summary.json does not count as finished.

No stage runs here: the workdirs are fake (their summary.json and checkpoint markers only).
"""

import importlib
import json
import os
from pathlib import Path

import pytest
from etils import epath

from synthjax import experiment
from synthjax.core import config_files, workdir
from synthjax.core.config_files import load
from synthjax.core.errors import ConfigError
from synthjax.core.workdir import Run, read_summary, write_json_atomic
from synthjax.experiment import STAGE_ORDER, plan_config_change, stages_of_field

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/quickstart.py:smoke"


def _config(tmp_path, **fields):
    config = load(str(REPO / CONFIG))
    config.stages = ()  # no stage runs: the check, the moves and config.json only
    config.dataset.phantom.dir = str(tmp_path / "phantoms")
    config.dataset.data_dir = str(tmp_path / "data")
    config.compilation_cache = ""
    for field, value in fields.items():
        config_files.set_field(config, field.replace("__", "."), value)
    return config


def _resolved(config):
    return json.loads(config.to_json_best_effort())


def _workdir(tmp_path, finished=(), checkpointed=(), **old_fields):
    """A workdir started with the smoke config (+ old_fields): `finished` stages have a
    summary, `checkpointed` ones a checkpoint (started, not finished)."""
    w = tmp_path / "w"
    w.mkdir()
    old = _config(tmp_path, **old_fields)
    old.stages = STAGE_ORDER  # the run that made it ran them all (`stages` is free)
    (w / "config.json").write_text(json.dumps(_resolved(old)))
    for stage in finished:
        (w / stage).mkdir()
        (w / stage / "summary.json").write_text(json.dumps({"stage": stage, "step": 1}))
    for stage in checkpointed:
        (w / stage / "checkpoints" / "5").mkdir(parents=True)
    if "synthesize" in finished:
        (w / "synthetic").mkdir()
        (w / "synthetic" / "DATASET_CARD.json").write_text("{}")
    if "report" in finished:
        (w / "report.json").write_text("{}")
        (w / "report_auroc.png").write_bytes(b"png")
    return w


def _plan(w, tmp_path, rerun_from=None, **new_fields):
    old = json.loads((w / "config.json").read_text())
    return plan_config_change(
        epath.Path(w), old, _resolved(_config(tmp_path, **new_fields)), rerun_from
    )


# --- which stages each field changes -------------------------------------------------------


@pytest.mark.parametrize(
    "field,stages",
    [
        ("seed", STAGE_ORDER),
        ("dataset.resolution", STAGE_ORDER),
        ("dataset.phantom.num_patients", STAGE_ORDER),
        ("dataset.manual_dir", STAGE_ORDER),  # which data: not a mere location
        ("classifier.learning_rate", ("classifier_real", "classifier_synthetic")),
        ("gan.cpd.learning_rate", ("gan",)),
        ("gan.fd.num_images", ("gan",)),
        ("synthesize.shard_size", ("synthesize",)),
        ("synthesize.batch_size", ("synthesize",)),  # it sets the shard layout
        ("privacy.max_copy_rate", ("synthesize",)),
        ("evaluate.prdc_k", ("evaluate",)),
        ("evaluate.c2st.train_steps", ("evaluate",)),
        ("report.anything", ("report",)),
        ("some_new_section.field", STAGE_ORDER),  # unknown: every stage, to be safe
        # free: where, how fast, on how many devices, how often it logs / checkpoints
        ("stages", ()),
        ("mesh.data", ()),
        ("compilation_cache", ()),
        ("conv_lowering", ()),
        ("dataset.data_dir", ()),
        ("dataset.phantom.dir", ()),
        ("dataset.prepare_workers", ()),
        ("classifier.eval_batch_size", ()),
        ("classifier.checkpoint_every", ()),
        ("gan.log_every", ()),
        ("gan.sample_rows", ()),
        ("gan.fd.batch_size", ()),
        # a finished GAN trains longer (_extend_finished_gan); an unfinished one resumes
        ("gan.train_steps", ()),
        ("gan.train_kimg", ()),
    ],
)
def test_stages_of_field(field, stages):
    assert stages_of_field(field) == tuple(stages)


def _leaves(d, prefix=""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_free_field_names_a_real_field():
    """A typo in FREE_FIELDS would free nothing (and refuse a field meant to be free)."""
    fields = list(_leaves(_resolved(importlib.import_module("configs.default").get_config())))
    for pattern in experiment.FREE_FIELDS + experiment.GAN_LENGTH_FIELDS:
        assert any(experiment._matches(f, pattern) for f in fields), pattern
    for prefix in experiment.FIELD_STAGES:
        if prefix != "report.":  # no report settings yet
            assert any(experiment._matches(f, prefix) for f in fields), prefix


# --- refusals and what is accepted ---------------------------------------------------------


def test_a_changed_classifier_field_is_refused_naming_field_stage_and_ways_on(tmp_path):
    w = _workdir(tmp_path, finished=("prepare", "classifier_real"))
    with pytest.raises(ConfigError) as err:
        _plan(w, tmp_path, classifier__learning_rate=0.005)
    message = str(err.value)
    assert "`classifier.learning_rate`" in message
    assert "classifier.learning_rate: 0.001 -> 0.005" in message
    assert "changes classifier_real, classifier_synthetic" in message
    assert "classifier_real has results made with the old values" in message
    assert "--config.classifier.learning_rate=0.001" in message  # rerun with the old value
    assert "new --workdir" in message
    assert "--config_change=rerun_from=classifier_real" in message


def test_several_changes_are_all_named(tmp_path):
    w = _workdir(tmp_path, finished=("prepare", "classifier_real", "gan"))
    with pytest.raises(ConfigError) as err:
        _plan(w, tmp_path, classifier__batch_size=32, gan__latent_dim=64, mesh__data=2)
    message = str(err.value)
    assert "classifier.batch_size: 16 -> 32" in message and "gan.latent_dim: 32 -> 64" in message
    assert "classifier_real, gan have results" in message
    assert "mesh.data" not in message  # free: not a reason to refuse
    assert "rerun_from=classifier_real" in message


def test_a_half_trained_stage_counts_as_started(tmp_path):
    w = _workdir(tmp_path, finished=("prepare", "classifier_real"), checkpointed=("gan",))
    with pytest.raises(ConfigError, match="gan has results made with the old values"):
        _plan(w, tmp_path, gan__cpd__learning_rate=0.01)


def test_written_shards_count_as_a_started_synthesize(tmp_path):
    w = _workdir(tmp_path, finished=("prepare", "classifier_real", "gan"))
    (w / "synthetic").mkdir()
    (w / "synthetic" / "synthetic-train.array_record-00000-of-00002").write_bytes(b"x")
    with pytest.raises(ConfigError, match="synthesize has results"):
        _plan(w, tmp_path, privacy__percentile=2.0)


def test_changes_to_stages_not_started_yet_are_accepted(tmp_path):
    w = _workdir(tmp_path, finished=("prepare", "classifier_real"))
    plan = _plan(w, tmp_path, gan__cpd__learning_rate=0.01, evaluate__prdc_k=3)
    assert plan.rerun_from is None
    assert {c.field for c in plan.changes} == {"gan.cpd.learning_rate", "evaluate.prdc_k", "stages"}


def test_free_fields_may_change_and_config_json_records_them(tmp_path, capsys):
    w = _workdir(tmp_path, finished=STAGE_ORDER)
    config = _config(
        tmp_path,
        mesh__data=2,
        classifier__eval_batch_size=32,
        gan__log_every=1,
        conv_lowering="im2col",
    )
    out = experiment.run(config, str(w))
    assert out == {}
    assert json.loads((w / "config.json").read_text())["mesh"]["data"] == 2
    printed = capsys.readouterr().out
    assert "fields that change no result" in printed and "mesh.data: -1 -> 2" in printed
    assert not (w / "superseded").exists()


def test_fields_a_code_update_added_or_removed_are_reported_not_refused(tmp_path, capsys):
    w = _workdir(tmp_path, finished=STAGE_ORDER)
    old = json.loads((w / "config.json").read_text())
    old["privacy"]["retired_setting"] = 7  # gone from the code since
    del old["gan"]["mapping_layers"]  # new in the code since
    (w / "config.json").write_text(json.dumps(old))
    assert experiment.run(_config(tmp_path), str(w)) == {}
    printed = capsys.readouterr().out
    assert "added or removed by a code update" in printed
    assert "privacy.retired_setting: 7 -> (absent)" in printed
    assert "gan.mapping_layers: (absent) -> 2" in printed
    assert not (w / "superseded").exists()


def test_a_longer_finished_gan_is_not_refused(tmp_path):
    """The train-longer path (tests/train_longer_test.py) needs no flag."""
    w = _workdir(tmp_path, finished=STAGE_ORDER)
    assert _plan(w, tmp_path, gan__train_steps=60).rerun_from is None


# --- rerun_from ----------------------------------------------------------------------------


def test_rerun_from_sets_the_stages_aside_and_proceeds(tmp_path, capsys):
    w = _workdir(tmp_path, finished=STAGE_ORDER)
    config = _config(tmp_path, classifier__learning_rate=0.005)
    with pytest.raises(ConfigError, match=r"classifier\.learning_rate"):
        experiment.run(config, str(w))
    assert sorted(p.name for p in w.iterdir()) == sorted(  # nothing moved or rewritten
        [*STAGE_ORDER, "config.json", "synthetic", "report.json", "report_auroc.png"]
    )
    assert json.loads((w / "config.json").read_text())["classifier"]["learning_rate"] == 0.001

    assert experiment.run(config, str(w), rerun_from="classifier_real") == {}
    assert sorted(p.name for p in w.iterdir()) == ["config.json", "prepare", "superseded"]
    assert json.loads((w / "config.json").read_text())["classifier"]["learning_rate"] == 0.005
    (superseded,) = (w / "superseded").iterdir()
    assert superseded.name.startswith("config_change_")
    assert sorted(p.name for p in superseded.iterdir()) == sorted(
        [*STAGE_ORDER[1:], "config.old.json", "synthetic", "report.json", "report_auroc.png"]
    )
    old = json.loads((superseded / "config.old.json").read_text())
    assert old["classifier"]["learning_rate"] == 0.001  # the config they were made with
    assert json.loads((superseded / "gan" / "summary.json").read_text())["stage"] == "gan"
    assert "config change: redoing classifier_real" in capsys.readouterr().out

    # The same command again (a restart after a preemption): nothing left to move.
    assert experiment.run(config, str(w), rerun_from="classifier_real") == {}
    assert "no changed field needs a rerun" in capsys.readouterr().out
    assert len(list((w / "superseded").iterdir())) == 1


def test_rerun_from_an_earlier_stage_is_fine(tmp_path):
    w = _workdir(tmp_path, finished=("prepare", "classifier_real", "gan"))
    plan = _plan(w, tmp_path, "prepare", gan__cpd__learning_rate=0.01)
    assert plan.rerun == STAGE_ORDER


def test_rerun_from_a_stage_after_a_changed_finished_one_is_refused(tmp_path):
    w = _workdir(tmp_path, finished=("prepare", "classifier_real", "gan"))
    with pytest.raises(ConfigError, match="rerun_from=gan would keep classifier_real") as err:
        _plan(w, tmp_path, "gan", classifier__learning_rate=0.005)
    assert "rerun_from=classifier_real (or an earlier stage)" in str(err.value)


def test_a_dataset_change_needs_everything_redone(tmp_path):
    w = _workdir(tmp_path, finished=("prepare", "classifier_real"))
    with pytest.raises(ConfigError, match="rerun_from=prepare"):
        _plan(w, tmp_path, seed=1)
    with pytest.raises(ConfigError, match="rerun_from=classifier_real would keep prepare"):
        _plan(w, tmp_path, "classifier_real", dataset__num_classes=3)


def test_parse_config_change():
    assert experiment.parse_config_change(None) is None
    assert experiment.parse_config_change("rerun_from=gan") == "gan"
    for bad in ("rerun_from=bogus", "redo=gan", "gan"):
        with pytest.raises(ConfigError, match="rerun_from=<stage>"):
            experiment.parse_config_change(bad)


# --- crash-safe state files ----------------------------------------------------------------


def test_write_json_atomic_syncs_the_file_and_its_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = epath.Path(tmp_path) / "stage" / "summary.json"
    write_json_atomic(path, {"stage": "gan", "step": 3})
    assert json.loads(path.read_text()) == {"stage": "gan", "step": 3}
    assert synced == [False, True]  # the file before its rename, the directory after
    assert [p.name for p in (tmp_path / "stage").iterdir()] == ["summary.json"]


def test_write_json_atomic_elsewhere_keeps_the_plain_rename(tmp_path, monkeypatch):
    """gs:// and other epaths: no fsync (their writes are durable once they return)."""
    monkeypatch.setattr(workdir, "is_local", lambda path: False)
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("fsync on a non-local path"))
    path = epath.Path(tmp_path) / "summary.json"
    write_json_atomic(path, {"stage": "gan"})
    assert read_summary(path) == {"stage": "gan"} and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("text", ["", "  \n", '{"stage": "ga', "[]"])
def test_an_empty_or_unreadable_summary_is_not_finished(tmp_path, capsys, text):
    (tmp_path / "gan").mkdir()
    path = tmp_path / "gan" / "summary.json"
    path.write_text(text)
    run_ = Run(config=None, workdir=epath.Path(tmp_path), mesh=None)
    workdir._warned_unreadable.clear()
    assert not run_.finished("gan")
    assert "counts as not finished" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match=r"summary\.json unreadable"):
        run_.summary("gan")
    write_json_atomic(epath.Path(path), {"stage": "gan"})  # what the rerun does
    assert run_.finished("gan") and read_summary(epath.Path(path)) == {"stage": "gan"}


def test_a_workdir_from_before_the_gan_sections_resumes_and_still_refuses_a_change(tmp_path):
    """config.json written when cpD's batch, rate and widths sat directly under `gan`."""
    new = _resolved(_config(tmp_path))
    gan = json.loads(json.dumps(new["gan"]))
    cpd, dcgan, prog = gan.pop("cpd"), gan["dcgan"], gan["prog"]
    gan.update(cpd)  # batch_size, learning_rate, fmap_base, fmap_max
    assert dcgan.pop("batch_size") == cpd["batch_size"] and prog.pop("fmap_max") == cpd["fmap_max"]
    old = {**new, "gan": gan}
    assert experiment.upgrade_old_config(old) == new
    w = tmp_path / "w"
    (w / "gan" / "checkpoints" / "5").mkdir(parents=True)
    upgraded = experiment.upgrade_old_config(old)
    assert not plan_config_change(epath.Path(w), upgraded, new, None).changes
    changed = _resolved(_config(tmp_path, gan__cpd__learning_rate=0.01))
    with pytest.raises(ConfigError, match="gan has results made with the old values"):
        plan_config_change(epath.Path(w), upgraded, changed, None)
