"""Property tests of the four dataset builders on random mixes of good and bad input.

Hypothesis writes a small source folder per example: valid rows mixed with rows cut short or
with extra cells, a byte-order mark, garbage labels, empty paths, `..` and absolute paths and
symlinks leading to a valid image beside the folder, missing files, truncated or corrupt images
and DICOMs with tags missing. Each builder reads and decodes it through the functions
`prepare` runs (`examples_by_split`, then every split's stream of examples), and then:

  - nothing raises;
  - every row (slice, unlabelled file) is counted once: kept + skipped = read;
  - no file outside the folder is opened (an audit hook sees every `open`), and the valid
    image placed outside is never kept.

Three rows, one per split, are always valid, so an example never ends in the builders'
"too few patients" refusal. `test_full_prepare_of_every_bad_kind` runs one fixed mix per
builder through the whole `prepare_*` with a two-process pool.
"""

import csv
import io
import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from etils import epath
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from synthjax.core.workdir import SPLITS
from synthjax.data import builder, chexpert, folder, nih_cxr14, rsna_ich
from synthjax.data.loader import load_source
from synthjax.data.phantoms.ct import writer as phantom_ct

SIZE = 32  # source images: dicom.MIN_SIDE, the smallest accepted
INSIDE, OUTSIDE = 60, 200  # pixel value of every valid image inside / the one outside
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
GARBAGE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)

# ---------------------------------------------------------------------------------------------
# Every `open` while a builder runs, through an audit hook (hooks cannot be removed: it is
# added once and records only inside `_recording`).

_OPENED: list[str] = []
_RECORDING = threading.Event()


def _audit(event, args):
    if event == "open" and _RECORDING.is_set() and isinstance(args[0], (str, bytes)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def _opened_outside(outside_dir: Path) -> list[str]:
    real = os.path.realpath(outside_dir)
    return [p for p in _OPENED if os.path.realpath(p).startswith(real + os.sep)]


# ---------------------------------------------------------------------------------------------
# Files


def _png(value=INSIDE) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(value=INSIDE) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE), value, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def _head_hu(value: float | None = None) -> np.ndarray:
    """A 32x32 head (brain disk in air), or a constant slice of `value` HU."""
    if value is not None:
        return np.full((SIZE, SIZE), value, np.float32)
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    return np.where(yy**2 + xx**2 < (SIZE / 3) ** 2, 40.0, -1000.0).astype(np.float32)


def _dicom(path: Path, *, patient: str, encoding="unsigned12", hu=None, drop=(), **changes):
    """A phantom CT slice (`phantom_ct.write_ct_dicom`), then tags dropped or changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    uid = pydicom.uid.generate_uid
    phantom_ct.write_ct_dicom(
        path,
        _head_hu() if hu is None else hu,
        encoding=encoding,
        patient_id=patient,
        study_uid=uid(),
        series_uid=uid(),
        sop_uid=uid(),
        position=(0.0, 0.0, 0.0),
        pixel_spacing=0.5,
    )
    if drop or changes:
        ds = pydicom.dcmread(path)
        for keyword in drop:
            delattr(ds, keyword)
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


def _patients_per_split(make_id) -> dict[str, str]:
    """One patient id per split (`make_id(i)` tried in order until each split has one)."""
    found: dict[str, str] = {}
    i = 0
    while len(found) < len(SPLITS):
        ident = make_id(i)
        found.setdefault(builder.patient_split(ident), ident)
        i += 1
    return found


def _csv_text(rows, bom: bool) -> str:
    """Rows (lists of cells, or a raw line as a str) as CSV text, optionally with a BOM."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        if isinstance(row, str):
            out.write(row + "\n")
        else:
            writer.writerow(row)
    return ("\ufeff" if bom else "") + out.getvalue()


# ---------------------------------------------------------------------------------------------
# Source folders: each writer takes (manual_dir, the folder beside it for the trap image, kinds,
# garbage texts, bom) and writes both.

# The kinds of row every CSV of image paths gets: malformed CSV rows, the ways out of the
# folder, bad image files.
CSV_ROW_KINDS = ("valid", "short", "long", "garbage_label", "empty_path", "duplicate")
WAYS_OUT = ("dotdot", "absolute", "symlink")
BAD_FILES = ("missing", "truncated", "corrupt")
CXR_KINDS = (*CSV_ROW_KINDS, *WAYS_OUT, *BAD_FILES)


def _image_rows(kind, file: Path, cells, text, *, image: bytes, trap: Path, dotdot: str, label_at):
    """The CSV rows of one row `kind` (CXR_KINDS), after writing what it needs at `file`.

    `cells` is the valid row for the image `file`: its path first, a label cell at `label_at`;
    `text` is the garbage for the kinds that need some. `image` is a valid image file's bytes,
    `dotdot` a path to the `trap` image outside that leads there by `..`.
    """
    if kind in ("valid", "short", "long", "garbage_label", "duplicate"):
        _write(file, image)
    elif kind in ("truncated", "corrupt"):
        _write(file, image[: len(image) // 2] if kind == "truncated" else b"\0" * 9)
    elif kind == "symlink":
        _link(file, trap)
    replaced = {
        "empty_path": (0, ""),
        "dotdot": (0, dotdot),
        "absolute": (0, str(trap)),
        "garbage_label": (label_at, text or "?"),
    }
    if kind in replaced:
        at, cell = replaced[kind]
        return [[*cells[:at], cell, *cells[at + 1 :]]]
    if kind == "short":
        return [",".join(cells[:2])]
    if kind == "long":
        return [[*cells, text or "x"]]
    return [cells, cells] if kind == "duplicate" else [cells]


def _png_rows_settings(trap: Path, label_at: int) -> dict:
    """`_image_rows`' settings for a CSV of PNG files in the folder beside `trap`'s, after
    writing the trap: a bright PNG."""
    _write(trap, _png(OUTSIDE))
    return {
        "image": _png(),
        "trap": trap,
        "dotdot": f"../{trap.parent.name}/{trap.name}",
        "label_at": label_at,
    }


def _write_chexpert(manual: Path, outside: Path, kinds, garbage, bom) -> None:
    dataset = manual / "CheXpert-v1.0-small"
    trap = outside / "patient00999/study1/view1_frontal.jpg"
    _write(trap, _jpeg(OUTSIDE))
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *chexpert.CHEXPERT_LABELS]
    anchors = _patients_per_split(lambda i: f"patient{i:05d}")
    rows: list = [header]

    def row(rel):
        cells = ["1.0"] + [""] * (len(chexpert.CHEXPERT_LABELS) - 1)
        return [f"CheXpert-v1.0-small/{rel}", "Female", "50", "Frontal", "AP", *cells]

    for patient in anchors.values():
        rel = f"train/{patient}/study1/view1_frontal.jpg"
        _write(dataset / rel, _jpeg())
        rows.append(row(rel))
    dotdot = row(f"../../outside/{trap.relative_to(outside)}")[0]
    how = {"image": _jpeg(), "trap": trap, "dotdot": dotdot, "label_at": 5}
    for i, kind in enumerate(kinds):
        rel = f"train/patient{1000 + i:05d}/study1/view1_frontal.jpg"
        rows += _image_rows(kind, dataset / rel, row(rel), garbage[i % len(garbage)], **how)
    (dataset / "train.csv").write_text(_csv_text(rows, bom))


def _write_nih(manual: Path, outside: Path, kinds, garbage, bom) -> None:
    images = manual / "images"
    how = _png_rows_settings(outside / "00000999_000.png", label_at=1)
    anchors = _patients_per_split(lambda i: f"nih{i:08d}")
    rows: list = [["Image Index", "Finding Labels", "Follow-up #", "Patient ID"]]
    for key in anchors.values():
        number = int(key[3:])
        _write(images / f"{number:08d}_000.png", _png())
        rows.append([f"{number:08d}_000.png", "Effusion", "0", str(number)])
    for i, kind in enumerate(kinds):
        name = f"{1000 + i:08d}_000.png"
        cells = [name, "Effusion|Mass", "0", str(1000 + i)]
        rows += _image_rows(kind, images / name, cells, garbage[i % len(garbage)], **how)
    (manual / "Data_Entry_2017.csv").write_text(_csv_text(rows, bom))


# Slice kinds: label rows, files (missing, unlabelled, cut short, leading out) and DICOM tags.
CT_LABEL_KINDS = ("valid", "float_labels", "garbage_label", "short", "long", "contradictory")
CT_FILE_KINDS = ("missing", "unlabelled", "truncated", "symlink", "dotdot")
CT_TAG_KINDS = ("no_rescale", "signed_hu", "no_patient", "no_modality")
CT_KINDS = (*CT_LABEL_KINDS, *CT_FILE_KINDS, *CT_TAG_KINDS)


def _write_rsna(manual: Path, outside: Path, kinds, garbage, bom) -> None:
    images = manual / rsna_ich.IMAGE_DIR
    trap = outside / "ID_trap.dcm"
    _dicom(trap, patient="P-outside", hu=_head_hu(500.0))
    anchors = _patients_per_split(lambda i: f"ID_{i:08x}")
    rows: list = [["ID", "Label"]]

    def labels(slice_id, values=(0, 0, 0, 0, 0, 0), spell=str):
        return [
            [f"{slice_id}_{n}", spell(v)] for n, v in zip(rsna_ich.CSV_LABELS, values, strict=True)
        ]

    for patient in anchors.values():
        _dicom(images / f"ID_a{patient[3:]}.dcm", patient=patient)
        rows += labels(f"ID_a{patient[3:]}")
    for i, kind in enumerate(kinds):
        slice_id, patient = f"ID_s{i:06d}", f"ID_{1000 + i:08x}"
        file = images / f"{slice_id}.dcm"
        text = garbage[i % len(garbage)]
        if kind in ("valid", "float_labels", "garbage_label", "short", "long", "unlabelled"):
            _dicom(file, patient=patient)
        if kind == "valid":
            rows += labels(slice_id, (0, 1, 0, 0, 0, 1))
        elif kind == "float_labels":
            rows += labels(slice_id, (1, 0, 0, 0, 0, 1), spell=lambda v: [" 0 ", "1.0"][v])
        elif kind == "garbage_label":
            rows += [*labels(slice_id)[:5], [f"{slice_id}_any", text]]
        elif kind == "short":
            rows += [*labels(slice_id)[:5], f"{slice_id}_any"]
        elif kind == "long":
            rows += [*labels(slice_id)[:5], [f"{slice_id}_any", "0", text or "x"]]
        elif kind == "missing":
            rows += labels(slice_id)
        elif kind == "truncated":
            _dicom(file, patient=patient)
            file.write_bytes(file.read_bytes()[:700])
            rows += labels(slice_id)
        elif kind == "no_rescale":
            _dicom(file, patient=patient, drop=("RescaleSlope", "RescaleIntercept"))
            rows += labels(slice_id)
        elif kind == "signed_hu":
            drop = ("RescaleSlope", "RescaleIntercept")
            _dicom(file, patient=patient, encoding="signed16", drop=drop)
            rows += labels(slice_id)
        elif kind == "no_patient":
            _dicom(file, patient="")
            rows += labels(slice_id)
        elif kind == "no_modality":
            _dicom(file, patient=patient, drop=("Modality",))
            rows += labels(slice_id)
        elif kind == "symlink":
            _link(file, trap)
            rows += labels(slice_id)
        elif kind == "dotdot":
            rows += labels("ID_../../outside/ID_trap")
        elif kind == "contradictory":
            _dicom(file, patient=patient)
            rows += labels(slice_id, (1, 0, 0, 0, 0, 0))
    (manual / rsna_ich.CSV_NAME).write_text(_csv_text(rows, bom))


FOLDER_KINDS = (*CXR_KINDS, "ct_no_rescale", "ct_signed_hu", "mr_dicom", "unlabelled")


def _write_folder(manual: Path, outside: Path, kinds, garbage, bom) -> None:
    how = _png_rows_settings(outside / "trap.png", label_at=2)
    anchors = _patients_per_split(lambda i: f"P{i:04d}")
    rows: list = [["image", "patient", "a", "b"]]
    for patient in anchors.values():
        _write(manual / f"{patient}.png", _png())
        rows.append([f"{patient}.png", patient, "1", "0"])
    for i, kind in enumerate(kinds):
        name, patient = f"img/{i}.png", f"Q{i:04d}"
        cells = [name, patient, "1", "0"]
        if kind in CXR_KINDS:
            rows += _image_rows(kind, manual / name, cells, garbage[i % len(garbage)], **how)
        elif kind == "unlabelled":
            _write(manual / name, _png())
        elif kind in ("ct_no_rescale", "ct_signed_hu", "mr_dicom"):
            dcm = f"img/{i}.dcm"
            if kind == "ct_no_rescale":
                _dicom(manual / dcm, patient=patient, drop=("RescaleSlope", "RescaleIntercept"))
            elif kind == "ct_signed_hu":
                drop = ("RescaleSlope", "RescaleIntercept")
                _dicom(manual / dcm, patient=patient, encoding="signed16", drop=drop)
            else:
                drop = ("RescaleSlope", "RescaleIntercept")
                _dicom(manual / dcm, patient=patient, drop=drop, Modality="MR")
            rows.append([dcm, patient, "0", "1"])
    (manual / "labels.csv").write_text(_csv_text(rows, bom))


# ---------------------------------------------------------------------------------------------
# Builders, run as `builds.write_dataset` runs them (without a pool or shards)


def _builder(name: str, manual: Path, data_dir: Path):
    if name == "chexpert":
        config = chexpert.ChexpertConfig(resolution=8, base_resolution=SIZE)
        return chexpert.Chexpert(config=config, data_dir=os.fspath(data_dir))
    if name == "nih_cxr14":
        config = nih_cxr14.NihCxr14Config(resolution=8, base_resolution=SIZE)
        return nih_cxr14.NihCxr14(config=config, data_dir=os.fspath(data_dir))
    if name == "rsna_ich":
        config = rsna_ich.RsnaIchConfig(resolution=8, base_resolution=SIZE, context=1)
        return rsna_ich.RsnaIch(config=config, data_dir=os.fspath(data_dir))
    config = folder.FolderConfig(resolution=8, base_resolution=SIZE, label_names=("a", "b"))
    return folder.FolderDataset(config=config, data_dir=os.fspath(data_dir))


# name -> (folder writer, row kinds, text in the id of the trap image, kinds that must be
# counted as outside_manual_dir: NIH and RSNA look files up by name in their own folders, so
# a `..` there is just a name that is not found).
WRITERS = {
    "chexpert": (_write_chexpert, CXR_KINDS, "patient00999", set(WAYS_OUT)),
    "nih_cxr14": (_write_nih, CXR_KINDS, "00000999", {"symlink"}),
    "rsna_ich": (_write_rsna, CT_KINDS, "trap", {"symlink"}),
    "folder": (_write_folder, FOLDER_KINDS, "trap", set(WAYS_OUT)),
}


def _build_in_process(name: str, manual: Path, data_dir: Path):
    """(report, examples) from the builder's own examples by split, decoded in this process."""
    builder = _builder(name, manual, data_dir)
    builder.workers = 1
    _OPENED.clear()
    _RECORDING.set()
    try:
        generators = builder.examples_by_split(epath.Path(manual))
        examples = [example for gen in generators.values() for _, example in gen]
    finally:
        _RECORDING.clear()
    return builder.report(), examples


def _check(report: dict, kept_ids, kept_images, outside: Path, trap: str) -> None:
    counts, rows_read = report["counts"], report["rows_read"]
    assert sum(counts.values()) == sum(rows_read.values()), (counts, rows_read)
    assert counts["kept"] == len(kept_ids) >= len(SPLITS)
    assert not _opened_outside(outside)
    assert not [i for i in kept_ids if trap in i]
    for image in kept_images:  # valid images are dark; the trap outside is bright
        assert image.min() < 150


def _kinds(kinds):
    return st.lists(st.sampled_from(kinds), min_size=1, max_size=10)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_random_mixes_are_counted_and_never_escape(name):
    write, kinds, trap, escaping = WRITERS[name]
    garbage = st.lists(GARBAGE, min_size=1, max_size=3)

    @SETTINGS
    @given(kinds=_kinds(kinds), garbage=garbage, bom=st.booleans())
    def check(kinds, garbage, bom):
        with tempfile.TemporaryDirectory() as tmp:
            manual, outside = Path(tmp) / "manual", Path(tmp) / "outside"
            write(manual, outside, kinds, garbage, bom)
            report, examples = _build_in_process(name, manual, Path(tmp) / "data")
            ids = [ex["id"] for ex in examples]
            _check(report, ids, [ex["image"] for ex in examples], outside, trap)
            if escaping & set(kinds):
                assert report["counts"]["outside_manual_dir"] > 0

    check()


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_full_prepare_of_every_bad_kind(name, tmp_path):
    """One mix of every kind through `prepare_*` itself, decoding in a two-process pool."""
    write, kinds, trap, _ = WRITERS[name]
    manual, outside = tmp_path / "manual", tmp_path / "outside"
    write(manual, outside, list(kinds), ["1,2", "\r", "é"], True)
    common = {"resolution": 8, "base_resolution": SIZE, "workers": 2}
    _OPENED.clear()  # only this process's opens; the workers' are checked by the results
    if name == "chexpert":
        dataset_dir, report = chexpert.prepare_chexpert(manual, tmp_path / "data", **common)
    elif name == "nih_cxr14":
        dataset_dir, report = nih_cxr14.prepare_nih_cxr14(manual, tmp_path / "data", **common)
    elif name == "rsna_ich":
        dataset_dir, report = rsna_ich.prepare_rsna_ich(manual, tmp_path / "data", **common)
    else:
        dataset_dir, report = folder.prepare_folder(manual, tmp_path / "data", **common)
    records = [load_source(dataset_dir, s) for s in SPLITS]
    ids = [source[i]["id"] for source in records for i in range(len(source))]
    images = [source[i]["image"] for source in records for i in range(len(source))]
    _check(report, ids, images, outside, trap)
    assert report["counts"]["outside_manual_dir"] >= 1
