"""End to end: the `quickstart.py:smoke` pipeline, and resuming after SIGKILL / SIGTERM.

These run the real command line in subprocesses, as a user would. A shared compilation
cache keeps the restarts from recompiling what the reference run already compiled.
"""

import json
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import REPO, _command, _env, _run, _summary

from synthjax.data.loader import load_source
from synthjax.eval import auc
from synthjax.experiment import STAGE_ORDER


def test_smoke_pipeline_writes_every_contract_file(smoke_run):
    workdir, proc = smoke_run
    for stage in STAGE_ORDER:
        summary = _summary(workdir, stage)
        assert summary["stage"] == stage
        assert {"step", "wall_s", "state_sha256"} <= set(summary)
    assert json.loads((workdir / "config.json").read_text())["gan"]["arch"] == "dcgan"
    for stage in ("classifier_real", "gan", "classifier_synthetic"):
        lines = (workdir / stage / "metrics.jsonl").read_text().splitlines()
        first = json.loads(lines[0])
        assert first["stage"] == stage and first["step"] >= 1
        assert list((workdir / stage / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (workdir / "gan" / "samples").glob("step_*.png"))

    report = json.loads((workdir / "report.json").read_text())
    for key in ("trtr_auroc_mean", "tstr_auroc_mean", "auroc_gap"):
        assert isinstance(report[key], float)
    assert report["per_label"] and (workdir / "report.md").exists()
    assert (workdir / "report_auroc.png").exists()
    assert "TSTR" in proc.stdout


def test_synthetic_dataset_loads_like_real_and_leaks_no_ids(smoke_run):
    workdir, _ = smoke_run
    prepared = _summary(workdir, "prepare")
    card = json.loads((workdir / "synthetic" / "DATASET_CARD.json").read_text())
    for split, n in prepared["images"].items():
        source = load_source(workdir / "synthetic", split)
        real = load_source(prepared["dataset_dir"], split)
        dropped = card["release"]["per_split"][split]["dropped"]
        assert len(source) + dropped == n and len(source) == card["counts"][split]
        assert source.image_shape == real.image_shape
        record = source[0]
        assert record["image"].dtype == np.uint8 and record["id"].startswith("synthetic-")
        # The same label vectors (none dropped), not in the real records' order.
        subset = np.load(workdir / "prepare" / "subset.npz")[f"indices_{split}"]
        if not dropped:
            assert sorted(map(bytes, source.labels)) == sorted(map(bytes, real.labels[subset]))
    real_ids = {load_source(prepared["dataset_dir"], "train")[i]["id"] for i in range(20)}
    exported = b"".join(p.read_bytes() for p in (workdir / "synthetic").iterdir() if p.is_file())
    assert not any(i.encode() in exported for i in real_ids)
    # Source ids look like patientNNNNN/studyN/viewN_frontal (CheXpert's folder names).
    assert not re.search(rb"patient\d{5}|view\d_frontal", exported)


def test_evaluation_measures_utility_fidelity_discrimination_and_privacy(smoke_run):
    workdir, _ = smoke_run
    report = json.loads((workdir / "report.json").read_text())
    # Label fidelity: in the report with its interval, per label, and at every GAN evaluation.
    lo, hi = report["label_fidelity_auroc_mean_ci"]
    assert lo <= report["label_fidelity_auroc_mean"] <= hi
    assert report["label_fidelity_per_label"]
    gan_records = [json.loads(x) for x in (workdir / "gan" / "metrics.jsonl").open()]
    evaluations = [r for r in gan_records if "fd" in r]
    assert evaluations and all(
        "label_fidelity" in r and "conditioning_strength" in r for r in evaluations
    )
    assert "Label fidelity" in (workdir / "report.md").read_text()
    row = report["per_label"][0]
    assert {"delong_p", "trtr_auprc", "tstr_auprc", "trtr_auprc_ci"} <= set(row)
    assert 0.0 <= row["delong_p"] <= 1.0
    overall = report["fidelity"]["overall"]
    assert overall["fd"] >= 0.0 and 0.0 <= overall["precision"] <= 1.0
    assert overall["real_baseline"]["fd"] >= 0.0
    c2st = report["discrimination"]["per_resolution"]
    assert [r["resolution"] for r in c2st] == [report["resolution"]]
    assert c2st[0]["auroc_ci"][0] <= c2st[0]["auroc"] <= c2st[0]["auroc_ci"][1]
    # The phantom's patients are known: the halves share none, the interval resamples them.
    assert report["discrimination"]["split"] == "patient"
    assert report["discrimination"]["interval_level"] == "patient"
    card = json.loads((workdir / "synthetic" / "DATASET_CARD.json").read_text())
    assert card["releasable"] is card["privacy"]["releasable"]
    assert report["privacy"] == card["privacy"]
    assert set(card["privacy"]["spaces"]) == {"pixels_16", "domain_features"}
    # The audit's grids show real training images: beside the stage, never in the release.
    assert [p.name for p in (workdir / "synthetic").glob("*.png")] == ["samples.png"]
    for name, path in report["figures"].items():
        assert (workdir / path).is_file(), name
    assert any(p.startswith("synthesize/closest_pairs_") for p in report["figures"].values())
    verdict = report["verdict"]
    assert verdict["decision"] in ("release", "release with caveats", "do not release")
    assert verdict["decision"] in (workdir / "report.md").read_text()
    assert verdict["refusals"] or verdict["passed"]
    # Notebooks read the same numbers through synthjax.analysis.
    from synthjax import analysis

    row = analysis.load_run(workdir)
    assert row["tstr_auroc_mean"] == report["tstr_auroc_mean"] and row["finished"] == "report"
    assert row["verdict"] == verdict["decision"] and row["gan.arch"] == "dcgan"


def test_report_adjusts_delong_p_and_shows_the_study_style_auroc(smoke_run):
    workdir, _ = smoke_run
    report = json.loads((workdir / "report.json").read_text())
    rows = report["per_label"] + report["per_combination"]
    assert report["multiplicity"]["tests"] == sum(r["delong_p"] is not None for r in rows)
    for row in rows:  # Holm never lowers a p-value
        assert row["delong_p"] <= row["delong_p_holm"] <= 1.0
    for side in ("trtr", "tstr"):
        ours, study = report[f"{side}_auroc_mean"], report[f"{side}_auroc_mean_study_style"]
        assert study >= ours and study >= 0.5
        assert all(
            r[f"{side}_auroc_study_style"] == max(r[f"{side}_auroc"], 1 - r[f"{side}_auroc"])
            for r in report["per_label"]
        )
    text = (workdir / "report.md").read_text()
    assert "| DeLong p | Holm p |" in text and "study-style (AUC < 0.5 flipped)" in text


def _latest_checkpoint(stage_dir):
    steps = [int(p.name) for p in (stage_dir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, default=0)


def _start_and_stop(workdir, cache, stage, min_step, sig):
    """Starts the job, waits for a finished checkpoint >= min_step of `stage`, signals it."""
    proc = subprocess.Popen(
        _command(workdir, cache),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while _latest_checkpoint(workdir / stage) < min_step:
        assert proc.poll() is None, proc.communicate()[1][-5000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def test_killed_and_preempted_runs_resume_to_the_same_fingerprints(smoke_run, cache_dir, tmp_path):
    reference, _ = smoke_run
    workdir = tmp_path / "resumed"
    workdir.mkdir()
    # The prepared data and the real classifier are shared: this run starts at the GAN (the
    # classifiers train through the same loop, checkpoints and data iterator).
    for stage in ("prepare", "classifier_real"):
        shutil.copytree(reference / stage, workdir / stage)

    # SIGTERM in the middle of the GAN (a preemptible VM going away): save, say so, exit 0.
    code, _, err = _start_and_stop(workdir, cache_dir, "gan", 10, signal.SIGTERM)
    assert code == 0, err[-3000:]
    assert "Rerun the same command" in err

    # SIGKILL after the resume: no chance to save, so the next run starts from the last
    # checkpoint and redoes the steps after it.
    code, _, _ = _start_and_stop(workdir, cache_dir, "gan", 15, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (workdir / "gan" / "summary.json").exists()

    # SIGHUP (the SSH session running the job in its foreground dropped): saves like SIGTERM.
    code, _, err = _start_and_stop(workdir, cache_dir, "gan", 20, signal.SIGHUP)
    assert code == 0, err[-3000:]
    assert "Rerun the same command" in err

    _run(workdir, cache_dir, "--config.stages=('prepare','classifier_real','gan')")
    assert _summary(workdir, "gan")["state_sha256"] == _summary(reference, "gan")["state_sha256"]
    # Metrics of the resumed run have each step once.
    steps = [
        json.loads(line)["step"]
        for line in (workdir / "gan" / "metrics.jsonl").read_text().splitlines()
        if "loss_d" in line
    ]
    assert steps == sorted(set(steps))


NIH_SAMPLE = REPO.parent / "shared" / "data" / "nih_cxr14_sample"


@pytest.mark.slow  # ~3 min; NIH ingestion is in nih_cxr14_test, the stages in the smoke run
@pytest.mark.skipif(not NIH_SAMPLE.exists(), reason=f"real NIH sample not found at {NIH_SAMPLE}")
def test_nih_sample_smoke_on_real_radiographs(tmp_path, cache_dir):
    command = _command(tmp_path / "nih", cache_dir, f"--config.dataset.manual_dir={NIH_SAMPLE}")
    command[3] = "--config=configs/nih_sample.py:smoke"
    proc = subprocess.run(
        command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    workdir = tmp_path / "nih"
    prepared = _summary(workdir, "prepare")
    assert prepared["phantom"] is False and "NIH Clinical Center" in prepared["attribution"]
    report = json.loads((workdir / "report.json").read_text())
    assert report["dataset"] == "nih_cxr14" and isinstance(report["tstr_auroc_mean"], float)
    assert "NIH Clinical Center" in (workdir / "report.md").read_text()
    card = json.loads((workdir / "synthetic" / "DATASET_CARD.json").read_text())
    assert card["source_dataset"]["attribution"] == prepared["attribution"]
    assert (workdir / "gan" / "samples" / "real.png").exists()


def test_intervals_resample_test_patients_with_image_level_ones_beside(smoke_run):
    workdir, _ = smoke_run
    report = json.loads((workdir / "report.json").read_text())
    prepared = _summary(workdir, "prepare")
    assert report["interval_level"] == "patient" and "interval_level_note" not in report
    assert report["test_images"] == prepared["images"]["test"]
    assert 1 < report["test_patients"] == prepared["patients"]["test"] <= report["test_images"]
    for key in ("trtr_auroc_mean", "tstr_auroc_mean", "trtr_auprc_mean", "tstr_auprc_mean"):
        for level in ("", "_image_level"):
            low, high = report[f"{key}_ci{level}"]
            assert low <= report[key] <= high, (key, level)
    row = report["per_label"][0]
    assert {"delong_p", "delong_p_image_level", "trtr_ci_image_level"} <= set(row)


@pytest.mark.slow  # ~3 min; DICOM -> HU -> windows is in rsna_ich_test and dicom_test
def test_ct_smoke_from_dicom_end_to_end(tmp_path, cache_dir):
    """The brain-CT arm: phantom DICOMs -> HU -> 3 windows -> classifier -> GAN -> synthetic
    -> evaluation, whose intervals resample the test patients (many slices each)."""
    command = _command(tmp_path / "ct", cache_dir)
    command[3] = "--config=configs/ct_256.py:smoke"
    proc = subprocess.run(
        command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    workdir = tmp_path / "ct"
    assert (workdir / "phantom_rsna_ich" / "COMPLETE.json").exists()
    prepared = _summary(workdir, "prepare")
    assert prepared["phantom"] is True
    assert prepared["label_names"] == [
        "epidural",
        "intraparenchymal",
        "intraventricular",
        "subarachnoid",
        "subdural",
        "no_finding",
    ]
    prepare_report = json.loads((workdir / "prepare" / "prepare_report.json").read_text())
    assert prepare_report["unit"] == "slices" and prepare_report["counts"]["kept"] > 300
    assert "slices read" in proc.stdout
    real = load_source(prepared["dataset_dir"], "train")
    synthetic = load_source(workdir / "synthetic", "train")
    assert real.image_shape == synthetic.image_shape == (16, 16, 3)
    assert len(synthetic) == prepared["images"]["train"]
    assert 0.0 <= _summary(workdir, "classifier_real")["best_val_auroc"] <= 1.0
    assert (workdir / "gan" / "samples" / "real.png").exists()
    report = json.loads((workdir / "report.json").read_text())
    assert report["interval_level"] == "patient"
    assert 2 * report["test_patients"] < report["test_images"]  # many slices per patient
    # The intervals are those of the saved scores with each slice's patient from the real
    # test shard (patient level), and of single slices (image level).
    evaluate = _summary(workdir, "evaluate")
    keep = [prepared["label_names"].index(n) for n in evaluate["labels_evaluated"]]
    scores = np.load(workdir / "classifier_real" / "test_predictions.npz")
    test_indices = np.load(workdir / "prepare" / "subset.npz")["indices_test"]
    patients = load_source(prepared["dataset_dir"], "test").patients[test_indices]
    y, probs = scores["labels"][:, keep], scores["probs"][:, keep]
    for clusters, level in ((patients, ""), (None, "_image_level")):
        want = auc.bootstrap_auroc(y, probs, **evaluate["bootstrap"], clusters=clusters)
        assert report[f"trtr_auroc_mean_ci{level}"] == pytest.approx(want["mean_ci"], abs=1e-12)
    assert report["trtr_auroc_mean_ci"] != report["trtr_auroc_mean_ci_image_level"]


PROG = (
    "--config.gan.arch=prog",
    "--config.gan.ada.enabled=True",
    "--config.stages=('prepare','classifier_real','gan','synthesize')",
)


@pytest.fixture(scope="session")
def prog_run(smoke_run, cache_dir, tmp_path_factory):
    """prog-GAN with ADA on the smoke data, uninterrupted, through synthesize."""
    reference, _ = smoke_run
    workdir = tmp_path_factory.mktemp("prog") / "run"
    workdir.mkdir()
    for stage in ("prepare", "classifier_real"):
        shutil.copytree(reference / stage, workdir / stage)
    _run(workdir, cache_dir, *PROG)
    return workdir


@pytest.mark.slow  # ~1.5 min; growing, fading and its resume are in gan_test
def test_prog_gan_grows_selects_by_fd_and_synthesizes(prog_run):
    gan = _summary(prog_run, "gan")
    assert gan["arch"] == "prog"
    assert [p["resolution"] for p in gan["phases"]] == [8, 16]
    assert gan["selected"]["by"] == "combined" and gan["selected"]["features"] == "classifier"
    assert gan["ada_p"] >= 0.0
    records = [json.loads(line) for line in (prog_run / "gan" / "metrics.jsonl").open()]
    alphas = [r["alpha"] for r in records if "alpha" in r]
    assert alphas and alphas == sorted(alphas) and 0.0 <= alphas[0] < 1.0
    assert any("fd" in r for r in records) and any("ada_p" in r for r in records)
    synthetic = load_source(prog_run / "synthetic", "train")
    assert synthetic.image_shape == (16, 16, 1)
    card = json.loads((prog_run / "synthetic" / "DATASET_CARD.json").read_text())
    assert card["generator"]["arch"] == "prog"
    assert card["generator"]["selected"]["step"] == gan["selected"]["step"]
