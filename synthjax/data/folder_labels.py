"""The folder dataset's labels CSV: its columns, its cells, and what to tell people about it.

Data flow: `manual_dir/<labels_csv>` -> `read_label_table` (header, rows, and which columns
hold the image paths, patient ids and 0/1 labels, with errors that name the config field to
set) -> `synthjax.data.folder.plan_rows`, which reads each row's cells with
`parse_label_cell`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence

from etils import epath

from synthjax.core.errors import ConfigError, DataNotFoundError

_TRUE = frozenset({"1", "1.0", "true", "yes"})
_FALSE = frozenset({"0", "0.0", "false", "no", ""})
FIELD = "--config.dataset.folder"


def layout_help(labels_csv: str) -> str:
    """What a folder dataset looks like and which config fields name its CSV, for errors."""
    return (
        f"Put a CSV with a header row at <FOLDER>/{labels_csv}: one row per image, with a "
        "column of image paths (relative to <FOLDER>, or absolute, of files inside <FOLDER>; "
        "PNG, JPEG or DICOM), a "
        "column of patient ids (the split is by patient) and one 0/1 column per label. Pass "
        f"--config.dataset.manual_dir=<FOLDER>, and name the CSV and its columns with "
        f"{FIELD}.labels_csv, {FIELD}.image_column, {FIELD}.patient_column and "
        f"{FIELD}.label_columns."
    )


@dataclasses.dataclass(frozen=True)
class LabelTable:
    """The labels CSV: header, data rows (lists of cells) and where the named columns are."""

    path: epath.Path
    header: tuple[str, ...]
    rows: list[list[str]]
    image_index: int
    patient_index: int
    label_indices: tuple[int, ...]
    label_names: tuple[str, ...]  # CSV order


def csv_text(path: epath.Path) -> str:
    """The labels CSV as text: UTF-8 (with or without a BOM), else Latin-1; not binary."""
    data = path.read_bytes()
    # A spreadsheet (xlsx is a zip, xls an OLE file) or UTF-16 text (a NUL in every other
    # byte). A stray NUL in one damaged row is that row's problem, counted like any other.
    head = data[:65536]
    if head[:4] in (b"PK\x03\x04", b"\xd0\xcf\x11\xe0") or head.count(0) > len(head) // 10:
        raise DataNotFoundError(
            f"{path} is not a CSV file (it holds binary data, e.g. a spreadsheet). Export it "
            f"as CSV with a header row, or point {FIELD}.labels_csv=<name> at the CSV."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_label_table(
    root: epath.Path,
    labels_csv: str,
    image_column: str,
    patient_column: str,
    label_columns: str | Sequence[str],
) -> LabelTable:
    """Reads the labels CSV and finds its image, patient and label columns.

    label_columns: comma-separated names (or a sequence of names); '' = every column other
    than the image and patient ones. Label names come back in CSV order. Header names and
    cells are stripped of surrounding spaces; a header line without commas but with
    semicolons or tabs is read with that delimiter.

    Raises:
      DataNotFoundError: not a CSV, no header, missing or repeated columns, no label
        column; the message lists the columns found and the config field to set.
      ConfigError: the same column named for two roles.
    """
    path = root / labels_csv
    text = csv_text(path)
    first_line = text.split("\n", 1)[0]
    delimiter = ","
    if "," not in first_line:
        delimiter = ";" if ";" in first_line else ("\t" if "\t" in first_line else ",")
    try:
        # newline='': a stray carriage return ends a row instead of failing the parse
        lines = io.StringIO(text, newline="")
        rows = [row for row in csv.reader(lines, delimiter=delimiter) if row]
    except csv.Error as error:
        raise DataNotFoundError(f"{path} is not a readable CSV file: {error}") from None
    if not rows:
        raise DataNotFoundError(
            f"{path} is empty: it needs a header row.\n{layout_help(labels_csv)}"
        )
    header = tuple(h.strip() for h in rows[0])
    if image_column == patient_column:
        raise ConfigError(
            "dataset.folder.patient_column",
            f"the same column {image_column!r} as dataset.folder.image_column",
            "name the column of patient ids",
        )
    if isinstance(label_columns, str):
        wanted = [n.strip() for n in label_columns.split(",") if n.strip()]
    else:
        wanted = list(label_columns)
    for name in wanted:
        if name in (image_column, patient_column):
            raise ConfigError(
                "dataset.folder.label_columns",
                f"{name!r} is also the image or patient column",
                "list only the 0/1 label columns",
            )
    fixes = []
    if image_column not in header:
        fixes.append((image_column, f"{FIELD}.image_column=<column of image paths>"))
    if patient_column not in header:
        fixes.append((patient_column, f"{FIELD}.patient_column=<column of patient ids>"))
    missing_labels = [n for n in wanted if n not in header]
    if missing_labels:
        fixes.append(
            (", ".join(missing_labels), f"{FIELD}.label_columns=<comma-separated label columns>")
        )
    if fixes:
        raise DataNotFoundError(
            f"{path} has no column(s) {[name for name, _ in fixes]}; the columns found are "
            f"{list(header)}. Set " + " and ".join(fix for _, fix in fixes) + "."
        )
    if wanted:
        label_names = tuple(h for h in header if h in wanted)
    else:
        label_names = tuple(h for h in header if h not in (image_column, patient_column))
    used = (image_column, patient_column, *label_names)
    repeated = sorted({h for h in header if h in used and header.count(h) > 1})
    if repeated:
        raise DataNotFoundError(
            f"{path} has more than one column named {repeated}; the columns found are "
            f"{list(header)}. Rename them so each is unique."
        )
    if not label_names:
        raise DataNotFoundError(
            f"{path} has no label columns: the columns found are {list(header)}, of which "
            f"{image_column!r} holds image paths and {patient_column!r} patient ids. Add one "
            f"0/1 column per label, or set {FIELD}.label_columns=<comma-separated columns>."
        )
    return LabelTable(
        path=path,
        header=header,
        rows=rows[1:],
        image_index=header.index(image_column),
        patient_index=header.index(patient_column),
        label_indices=tuple(header.index(n) for n in label_names),
        label_names=label_names,
    )


def parse_label_cell(cell: str | None) -> float | None:
    """A label cell -> 1.0, 0.0, or None when it is neither.

    1: '1', '1.0', 'true', 'yes' (any case) or any number equal to 1. 0: '0', '0.0', 'false',
    'no', any number equal to 0, or a blank cell (a label nobody marked is absent). A cell a
    short row does not have (None) is neither.
    """
    if cell is None:
        return None
    text = cell.strip().lower()
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value in (0.0, 1.0) else None


def label_signature(cells: Sequence[str | None]) -> tuple:
    """Cells compared for duplicate rows: parsed where possible, else the raw lowercase text."""
    out = []
    for cell in cells:
        value = parse_label_cell(cell)
        out.append(value if value is not None else (cell or "").strip().lower())
    return tuple(out)
