"""The release: the export of the quickstart holds no real image, no path of this machine and
no host name; it refuses what the card does not release, and never writes over a release.

The smoke pipeline runs once (the `smoke_run` fixture of e2e_test, about a minute); the
export runs on it as a user runs it, in a subprocess.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from synthjax import export
from synthjax.core import metrics
from synthjax.data import shards
from synthjax.data.loader import load_source

SPLITS = ("train", "validation", "test")
FAKE_HOST = "radiology-ws-0042.hospital.example"


def _export(workdir, out):
    return subprocess.run(
        [sys.executable, "-m", "synthjax.export", "--workdir", str(workdir), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _card_path(workdir):
    return Path(workdir) / "synthetic" / "DATASET_CARD.json"


def _edit_card(workdir, **fields):
    card = json.loads(_card_path(workdir).read_text())
    card.update(fields)
    _card_path(workdir).write_text(json.dumps(card, indent=2))
    return card


def _copy_workdir(workdir, dest):
    """What the export reads, without checkpoints and real data (their paths stay named in
    config.json and prepare/summary.json, as in the original)."""
    dest.mkdir(parents=True)
    for part in ("config.json", "report.json", "report.md", "synthetic", "prepare/summary.json"):
        source, target = workdir / part, dest / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    for png in workdir.glob("report_*.png"):
        shutil.copy(png, dest / png.name)
    shutil.copytree(workdir / "gan" / "samples", dest / "gan" / "samples")
    return dest


@pytest.fixture(scope="module")
def released(smoke_run, tmp_path_factory):
    """(workdir, release, export's stdout) of the smoke run; when the smoke run's audit said
    not releasable, of a copy whose card says it passed (the content is the same)."""
    workdir, _ = smoke_run
    if json.loads(_card_path(workdir).read_text())["releasable"] is not True:
        workdir = _copy_workdir(workdir, tmp_path_factory.mktemp("releasable") / "run")
        _edit_card(workdir, releasable=True)
    out = tmp_path_factory.mktemp("release") / "release"
    proc = _export(workdir, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return workdir, out, proc.stdout


def _files(directory):
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_the_release_holds_only_allowlisted_files(released):
    workdir, out, stdout = released
    info = json.loads((workdir / "synthetic" / "dataset_info.json").read_text())
    shards = {
        f"synthetic/synthetic-{s['name']}.array_record-{i:05d}-of-{len(s['shardLengths']):05d}"
        for s in info["splits"]
        for i in range(len(s["shardLengths"]))
    }
    figures = {p.name for p in workdir.glob("report_*.png")}
    grids = {"synthetic/samples.png"}  # audited images; the GAN's own grids stay inside
    expected = (
        shards
        | {f"synthetic/{n}" for n in ("dataset_info.json", "features.json", "metadata.json")}
        | {"synthetic/DATASET_CARD.json", "report.json", "report.md", "MANIFEST.json"}
        | figures
        | grids
    )
    assert set(_files(out)) == expected
    assert grids and figures <= set(export.REPORT_FIGURES)
    assert not list(out.parent.glob(".release.partial-*"))
    # The manifest lists every other file with its sha256.
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert {f["path"] for f in manifest["files"]} == expected - {"MANIFEST.json"}
    for f in manifest["files"]:
        data = (out / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
    card = json.loads((out / "synthetic" / "DATASET_CARD.json").read_text())
    assert manifest["counts"] == card["counts"] and manifest["released_by_override"] is None
    for split, n in card["counts"].items():
        assert f"{split} {n}" in stdout
        assert len(load_source(out / "synthetic", split)) == n  # it loads like any dataset
    # Links to what stayed inside say so instead of pointing nowhere.
    report = json.loads((out / "report.json").read_text())
    assert all(p in expected or p == export.NOT_RELEASED for p in report["figures"].values())
    assert "](synthesize/" not in (out / "report.md").read_text()


# --- no real image ----------------------------------------------------------------------------

CELL = 16  # the smoke run's resolution


def _window_hashes(q: np.ndarray) -> np.ndarray:
    """A float hash of every CELL x CELL window of a 2-D array (separable weights); equal
    windows hash bit-identically, since every window is summed in the same order."""
    rng = np.random.default_rng(0)
    a, b = rng.random(CELL), rng.random(CELL)
    q = q.astype(np.float64)
    h, w = q.shape
    if h < CELL or w < CELL:
        return np.zeros((0, 0))
    rows = sum(b[j] * q[:, j : w - CELL + 1 + j] for j in range(CELL))
    return sum(a[i] * rows[i : h - CELL + 1 + i] for i in range(CELL))


def _real_images(workdir):
    prepared = json.loads((workdir / "prepare" / "summary.json").read_text())
    images = []
    for split in SPLITS:
        source = load_source(prepared["dataset_dir"], split)
        images += [source[i]["image"] for i in range(len(source))]
    assert images and images[0].shape == (CELL, CELL, 1)
    return images


def _real_cells_in(png: Path, real: dict[float, list[np.ndarray]]) -> int:
    """How many windows of the PNG are a real image, upscaled by 1 to 8 (nearest)."""
    picture = np.asarray(Image.open(png).convert("L"))
    count = 0
    for scale in range(1, 9):
        for dy in range(scale):
            for dx in range(scale):
                q = picture[dy::scale, dx::scale]
                hashes = _window_hashes(q)
                for y, x in zip(*np.nonzero(np.isin(hashes, list(real))), strict=True):
                    window = q[y : y + CELL, x : x + CELL]
                    count += any(np.array_equal(window, r) for r in real[hashes[y, x]])
    return count


@pytest.fixture(scope="module")
def real_index(released):
    real: dict[float, list[np.ndarray]] = {}
    for image in _real_images(released[0]):
        real.setdefault(float(_window_hashes(image[..., 0])[0, 0]), []).append(image[..., 0])
    return real


def test_no_released_image_is_a_real_image(released, real_index):
    workdir, out, _ = released
    real_bytes = {hashlib.sha256(r.tobytes()).digest() for rs in real_index.values() for r in rs}
    for split in SPLITS:
        source = load_source(out / "synthetic", split)
        for i in range(len(source)):
            image = np.ascontiguousarray(source[i]["image"][..., 0])
            assert hashlib.sha256(image.tobytes()).digest() not in real_bytes, (split, i)
    pngs = sorted(out.rglob("*.png"))
    assert pngs
    for png in pngs:
        assert _real_cells_in(png, real_index) == 0, png
    # The check finds real images where they are: the real grid beside the samples.
    assert _real_cells_in(workdir / "gan" / "samples" / "real.png", real_index) > 0


# --- no path of this machine, no host name ------------------------------------------------


def _leaks(path: Path, needles: dict[str, str]) -> list[str]:
    """Needles in a file. Names shorter than export.MIN_RAW_NEEDLE (a host called 'vm') are
    looked for only where text can be: in pixels and compressed bytes 2 bytes match by chance."""
    data = path.read_bytes()
    text = path.suffix in (".json", ".md")
    found = []
    for needle, what in needles.items():
        if len(needle) >= export.MIN_RAW_NEEDLE and needle.encode() in data:
            found.append(what)
        elif text and re.search(rf"(?<![\w-]){re.escape(needle)}(?![\w-])", data.decode()):
            found.append(what)
        elif path.suffix == ".png" and needle.encode() in export._png_text(data):
            found.append(what)
    return found


def test_no_file_carries_a_path_or_the_host_name(released, tmp_path_factory):
    workdir, out, _ = released
    needles = {
        str(workdir.absolute()): "workdir",
        str(tmp_path_factory.getbasetemp()): "tmp base",
        socket.gethostname(): "host name",
        str(Path.home()): "home",
    }
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        assert not _leaks(path, needles), (path, _leaks(path, needles))
    ids = {load_source(out / "synthetic", s)[0]["id"] for s in SPLITS}
    assert all(export.SYNTHETIC_ID.fullmatch(i) for i in ids)
    card = json.loads((out / "synthetic" / "DATASET_CARD.json").read_text())
    assert card["config"]["compilation_cache"] in ("", export.WITHHELD)


def test_a_planted_host_name_and_paths_are_scrubbed(released, tmp_path, monkeypatch):
    """A long host name and folder names, planted where a careless stage could write them,
    leave as "<host>" and "<withheld>", and no byte of the release holds them."""
    workdir = _copy_workdir(released[0], tmp_path / "run")
    monkeypatch.setattr(socket, "gethostname", lambda: FAKE_HOST)
    card = json.loads(_card_path(workdir).read_text())
    card["description"] += f" Trained on {FAKE_HOST} from /mnt/pacs/export/cxr."
    card["source_dataset"]["data"] = {"manual_dir": "/mnt/pacs/export/cxr", "n": [f"{workdir}/x"]}
    card["releasable"] = True
    _edit_card(workdir, **card)
    report = workdir / "report.md"
    report.write_text(report.read_text() + f"\nRun on {FAKE_HOST} in {workdir}/gan.\n")
    out = tmp_path / "release"
    export.export(workdir, out, log=lambda _: None)
    card = json.loads((out / "synthetic" / "DATASET_CARD.json").read_text())
    assert card["source_dataset"]["data"] == {"manual_dir": "<withheld>", "n": ["<withheld>"]}
    assert card["description"].endswith("Trained on <host> from <withheld>.")
    assert (out / "report.md").read_text().endswith("Run on <host> in <withheld>.\n")
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in (FAKE_HOST, "radiology-ws-0042", "/mnt/pacs", str(workdir)):
                assert needle.encode() not in data, (path, needle)


def test_a_private_string_the_scrubber_cannot_reach_fails_the_whole_export(released, tmp_path):
    workdir = _copy_workdir(released[0], tmp_path / "run")
    _edit_card(workdir, releasable=True)
    grid = workdir / "synthetic" / "samples.png"
    with grid.open("ab") as f:  # trailing bytes after IEND: invisible, but they would leave
        f.write(str(workdir).encode())
    out = tmp_path / "release"
    proc = _export(workdir, out)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "synthetic/samples.png" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".release.partial-*"))


def test_no_patient_id_leaves(released):
    """The real shards keep each image's patient (for patient-level intervals); no byte of
    the release holds one, and the released shards have no such feature."""
    workdir, out, _ = released
    prepared = json.loads((workdir / "prepare" / "summary.json").read_text())
    patients = set()
    for split in SPLITS:
        patients |= set(load_source(prepared["dataset_dir"], split).patients.tolist())
        assert not load_source(out / "synthetic", split).has_patients
    assert len(patients) > 10
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not [p for p in patients if p.encode() in data], path


def test_synthetic_shards_with_patient_ids_are_refused(released, tmp_path):
    workdir = _copy_workdir(released[0], tmp_path / "run")
    _edit_card(workdir, releasable=True)
    synthetic = workdir / "synthetic"
    name = json.loads((synthetic / "dataset_info.json").read_text())["name"]
    sources = {s: load_source(synthetic, s) for s in SPLITS}
    train = sources["train"]
    records = {
        s: [{**src[i], "patient": "patient00001"} for i in range(len(src))]
        for s, src in sources.items()
    }
    features = shards.image_features(train.image_shape, len(train.label_names), with_patient=True)
    for old in synthetic.glob("*.array_record-*"):
        old.unlink()
    lengths = {
        s: shards.write_split(
            synthetic, name=name, split=s, features=features, records=r, shard_size=1 << 20
        )
        for s, r in records.items()
    }
    shards.write_metadata(
        synthetic,
        name=name,
        features=features,
        shard_lengths=lengths,
        label_names=train.label_names,
        description="synthetic shards that wrongly keep a patient id",
    )
    out = tmp_path / "release"
    proc = _export(workdir, out)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("error: ") and "patient id" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".release.partial-*"))


# --- refusals ----------------------------------------------------------------------------------


def test_a_card_not_releasable_is_refused_unless_overridden(released, tmp_path):
    workdir = _copy_workdir(released[0], tmp_path / "run")
    card = json.loads(_card_path(workdir).read_text())
    card["privacy"].pop("override", None)
    _edit_card(workdir, releasable=False, privacy=card["privacy"])
    out = tmp_path / "release"
    proc = _export(workdir, out)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("error: ") and '"releasable": false' in proc.stderr
    assert "release_override" in proc.stderr and "closest_pairs" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".release.partial-*"))

    reason = "reviewed by the data protection officer, ticket 1234"
    card["privacy"]["override"] = {"reason": reason}
    _edit_card(workdir, privacy=card["privacy"])
    proc = _export(workdir, out)
    assert proc.returncode == 0, proc.stderr
    assert "OVERRIDE" in proc.stdout and reason in proc.stdout
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["released_by_override"] == reason


def test_an_existing_release_is_never_written_over(released, tmp_path):
    out = tmp_path / "release"
    out.mkdir()
    (out / "notes.txt").write_text("someone's files")
    proc = _export(released[0], out)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "not empty" in proc.stderr
    assert _files(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "someone's files"


# --- units -------------------------------------------------------------------------------------


def test_the_scrubber_withholds_paths_in_nested_json_and_the_host_in_markdown(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: FAKE_HOST)
    private = export.Private({"/data/hospital/run7": "the workdir path"}, export.host_names())
    obj = {
        "a": [{"dataset_dir": "/data/hospital/run7/data/1.0.0", "n": 3}, "gs://bucket/x"],
        "b": {"c": {"weights": "~/models/inception.npz", "kept": "50/50 split, 12 img/s"}},
        "note": f"written on {FAKE_HOST} at /srv/cache/jax (see https://example.org/a/b)",
    }
    assert export.scrub_json(obj, private) == {
        "a": [{"dataset_dir": "<withheld>", "n": 3}, "<withheld>"],
        "b": {"c": {"weights": "<withheld>", "kept": "50/50 split, 12 img/s"}},
        "note": "written on <host> at <withheld> (see https://example.org/a/b)",
    }
    markdown = (
        f"# Report\n\nTrained on **{FAKE_HOST.split('.')[0]}** and {FAKE_HOST}; data in "
        "`/data/hospital/run7/data`.\n\n| real / synthetic | 0.5 |\n"
    )
    assert export.scrub_text(markdown, private) == (
        "# Report\n\nTrained on **<host>** and <host>; data in `<withheld>`.\n\n"
        "| real / synthetic | 0.5 |\n"
    )
    # A host name inside a longer word is not the host name.
    short = export.Private({}, ("vm",))
    assert export.scrub_text("svm on vm, vm.local", short) == "svm on <host>, <host>.local"


def test_tensorboard_event_files_are_named_without_the_host(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: FAKE_HOST)
    with metrics.MetricsWriter(tmp_path, "gan") as writer:
        writer.write(1, {"loss": 1.0})
    (name,) = [p.name for p in (tmp_path / "tensorboard").iterdir()]
    assert re.fullmatch(rf"events\.out\.tfevents\.\d+\.p0\.{os.getpid()}\.0", name)
    assert "radiology" not in name


def test_the_real_image_grid_says_so_on_the_image(monkeypatch, tmp_path):
    from synthjax.stages import gan

    drawn = {}
    monkeypatch.setattr(gan.grids, "save_image_grid", lambda path, rows, **kw: drawn.update(kw))

    class Source:
        labels = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
        image_shape = (4, 4, 1)

        def __getitem__(self, i):
            return {"image": np.full((4, 4, 1), i, np.uint8)}

    gan.save_real_grid(
        tmp_path / "real.png",
        Source(),
        np.arange(4),
        np.eye(2, dtype=np.uint8),
        cols=2,
        row_titles=["a", "b"],
        seed=0,
        attribution="Data: somebody",
    )
    assert drawn["title"].startswith("REAL PATIENT IMAGES") and "release" in drawn["title"]
    assert "keep inside" in drawn["footer"] and drawn["footer"].endswith("Data: somebody")
