"""A raw download's index files, read safely: CSV text, rows, folder boundary, fingerprint.

Every builder reads a source folder through these: `read_csv_rows` / `parse_csv` (UTF-8 with
or without a byte-order mark, a clear error for anything that is not a CSV),
`row_shape_problem` (rows cut short or with cells past the last column), `Boundary` (whether a
file, symlinks followed, lies inside the source folder) and `source_fingerprint` (the content
hash of the index files, by which `builds.prepare_with_reuse` tells a changed source).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import posixpath
from collections.abc import Callable, Iterable
from typing import Any

from etils import epath

from synthjax.core.errors import DataNotFoundError
from synthjax.data import remote


def read_csv_text(path: epath.Path) -> str:
    """A source CSV (or list) as text: UTF-8, with or without a byte-order mark.

    Spreadsheet programs save UTF-8 with a BOM, which would otherwise stick to the first
    column's name ('\ufeffPath') and make the file look like it lacks that column.

    Raises:
      DataNotFoundError: the bytes are not UTF-8; the message says to re-save the file.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataNotFoundError(
            f"{path} is not UTF-8 text ({error}). Point manual_dir at an unmodified download, "
            "or re-save the file as UTF-8 CSV."
        ) from None


def parse_csv(path: epath.Path, reader: Callable[[io.StringIO], Iterable[Any]]) -> list[Any]:
    """Every row `reader` (`csv.reader`, `csv.DictReader`) yields from a dataset's CSV file.

    Raises:
      DataNotFoundError: not UTF-8, or not parseable as CSV (e.g. a cell over the csv
        module's size limit).
    """
    try:
        # newline='': a stray carriage return ends a row instead of failing the parse
        return list(reader(io.StringIO(read_csv_text(path), newline="")))
    except csv.Error as error:
        raise DataNotFoundError(
            f"{path} is not a readable CSV file ({error}). Point manual_dir at an unmodified "
            "download."
        ) from None


def read_csv_rows(
    path: epath.Path, required: Iterable[str], kind: str
) -> list[dict[str, str | None]]:
    """The rows of a CSV with a header row, as `csv.DictReader` dicts; see `row_shape_problem`.

    `kind` names the file in messages ('a CheXpert CSV').

    Raises:
      DataNotFoundError: not UTF-8, not parseable as CSV (e.g. a cell over the csv module's
        size limit), or a header without the `required` columns.
    """
    rows = parse_csv(path, csv.DictReader)
    header = set(rows[0]) if rows else set()
    missing = [c for c in required if c not in header]
    if rows and missing:
        raise DataNotFoundError(
            f"{path} does not look like {kind}: missing columns {missing}. Point manual_dir "
            "at an unmodified download."
        )
    return rows


def row_shape_problem(row: dict[str | None, str | None]) -> tuple[str, str] | None:
    """('short_row' | 'long_row', detail) for a CSV row whose cells do not line up, else None.

    short_row: a named column has no cell at all (`csv.DictReader` fills it with None): the
    row was cut, and its last cell may be cut too. long_row: non-blank cells past the last
    column (an unquoted comma, which shifts every cell after it onto the wrong column).
    Trailing empty cells and unnamed trailing columns are harmless and pass.
    """
    missing = [name for name, cell in row.items() if name and cell is None]
    if missing:
        return "short_row", f"no cell for {missing}"
    extra = [cell for cell in row.get(None) or () if cell and cell.strip()]
    if extra:
        return "long_row", f"{len(extra)} non-blank cell(s) past the last column: {extra[:3]!r}"
    return None


class Boundary:
    """Tells whether a file, with every symlink followed, lies inside a folder.

    CSV paths with `..`, absolute paths and symlinks out of the source folder would otherwise
    pull files from elsewhere (another cohort, another dataset) into this one. Each folder's
    real path is resolved once, so checking a file costs one lstat. Paths on a bucket
    ('gs://...', no symlinks there) are compared as written, `..` resolved.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = self.resolve(folder, cache=False)
        self._parents: dict[str, str] = {}

    @staticmethod
    def _remote(path: str) -> bool:
        return "://" in path

    def resolve(self, path: str | os.PathLike, cache: bool = True) -> str:
        """The real path of `path` (lexically normalised for a bucket)."""
        path = os.fspath(path)
        if self._remote(path):
            scheme, rest = path.split("://", 1)
            return f"{scheme}://{posixpath.normpath('/' + rest).lstrip('/')}"
        try:
            if not cache:
                return os.path.realpath(path)
            parent, name = os.path.split(os.path.abspath(path))
            real_parent = self._parents.get(parent)
            if real_parent is None:
                real_parent = self._parents[parent] = os.path.realpath(parent)
            full = os.path.join(real_parent, name)
            return os.path.realpath(full) if os.path.islink(full) else full
        except ValueError:  # a NUL character: no such file can exist, so none is followed
            return os.path.abspath(path)

    def contains(self, path: str | os.PathLike) -> bool:
        """True when `path` resolves to the folder or anything below it."""
        resolved = self.resolve(path)
        sep = "/" if self._remote(resolved) else os.sep
        return resolved == self.folder or resolved.startswith(self.folder.rstrip(sep) + sep)

    def outside(self, path: str | os.PathLike) -> str:
        """The detail of an `outside_manual_dir` skip: where `path` really leads, and the fix."""
        return (
            f"resolves to {self.resolve(path)}, outside {self.folder}; move or copy the file "
            "into that folder (symlinks out of it are not followed)"
        )


def source_fingerprint(root: epath.Path, names: Iterable[str]) -> dict[str, dict]:
    """Content hash and modification time of the index files `names`, to notice a change."""
    out = {}
    for csv_name in names:
        path = root / csv_name
        if path.exists():
            out[csv_name] = {
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "mtime_ns": _mtime_ns(path),
            }
    return out


def _mtime_ns(path: epath.Path) -> int:
    if remote.is_remote(path):  # a bucket: the object's update time, to the microsecond
        return round(float(path.stat().mtime) * 1e6) * 1000
    return os.stat(path).st_mtime_ns
