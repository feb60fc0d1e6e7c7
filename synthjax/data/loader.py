"""The one dataset loader: a prepared dataset directory -> random-access source.

Real datasets (written by the TFDS builders in this package) and synthetic ones (written by
`synthjax.synthesize` in the same array_record format) load through `load_source`, so every
stage downstream reads both alike. Records are `{"image": uint8[H, W, C],
"labels": float32[K], "id": str}`. A real dataset also knows each record's patient
(`ImageSource.patients`, for patient-level statistics); it is kept out of the records, so
nothing that copies or batches records can carry it along.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from synthjax.core.errors import DataNotFoundError
from synthjax.core.workdir import write_atomic
from synthjax.data import remote
from synthjax.data.shards import PATIENT

LABEL_NAMES_KEY = "label_names"


class ImageSource:
    """Random access to one split of a prepared dataset (grain `RandomAccessDataSource`).

    `labels` (float32[N, K]) is read once and cached beside the shards, because subset
    selection and fake-label sampling need every label vector without decoding images.
    """

    def __init__(self, dataset_dir: str | os.PathLike, split: str):
        self.dataset_dir = epath.Path(dataset_dir)
        self.split = split
        if not (self.dataset_dir / "dataset_info.json").exists():
            raise DataNotFoundError(
                f"no prepared dataset at {self.dataset_dir} (dataset_info.json missing): "
                "run the `prepare` stage first"
            )
        # array_record reads local files only: a dataset in a bucket is read from a mirror.
        builder = tfds.builder_from_directory(os.fspath(remote.local_mirror(self.dataset_dir)))
        if split not in builder.info.splits:
            raise DataNotFoundError(
                f"split {split!r} not in {self.dataset_dir}; it has {list(builder.info.splits)}"
            )
        self._source = builder.as_data_source(split=split)
        self.label_names: tuple[str, ...] = tuple(
            (builder.info.metadata or {}).get(LABEL_NAMES_KEY, ())
        )
        shape = builder.info.features["image"].shape
        self.image_shape: tuple[int, int, int] = tuple(int(d) for d in shape)
        # Real datasets prepared since builder version 1.1.0; never synthetic ones.
        self.has_patients: bool = PATIENT in builder.info.features
        self._labels: np.ndarray | None = None
        self._patients: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return _as_record(self._source[int(index)])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [_as_record(r) for r in self._source.__getitems__([int(i) for i in indices])]

    def __repr__(self) -> str:
        return f"ImageSource({str(self.dataset_dir)!r}, split={self.split!r}, n={len(self)})"

    @property
    def labels(self) -> np.ndarray:
        """float32[N, K]: every record's label vector, in record order."""
        if self._labels is None:
            self._labels = self._cached("labels", self._read_all_labels)
        return self._labels

    @property
    def patients(self) -> np.ndarray:
        """str[N]: every record's patient id, in record order (read once, cached beside the
        shards like `labels`).

        Raises:
          DataNotFoundError: the dataset keeps no patient ids (a synthetic dataset).
        """
        if not self.has_patients:
            raise DataNotFoundError(
                f"{self.dataset_dir} keeps no patient ids: synthetic datasets never do; a real "
                "one prepared by this version of synthjax does (rerun `prepare`)"
            )
        if self._patients is None:
            self._patients = self._cached("patients", self._read_all_patients)
        return self._patients

    def _cached(self, name: str, read: Callable[[], np.ndarray]) -> np.ndarray:
        """`read()`, saved beside the shards as `<name>-<split>.npy` the first time."""
        cache = self.dataset_dir / f"{name}-{self.split}.npy"
        if cache.exists():
            with cache.open("rb") as f:
                return np.load(f)
        values = read()
        buffer = io.BytesIO()
        np.save(buffer, values)
        write_atomic(cache, buffer.getvalue())
        return values

    def _read_all_patients(self) -> np.ndarray:
        n, chunk = len(self), 1024
        ids = [
            raw[PATIENT]
            for i in range(0, n, chunk)
            for raw in self._source.__getitems__(list(range(i, min(n, i + chunk))))
        ]
        return np.array([p.decode() if isinstance(p, bytes) else str(p) for p in ids], dtype=str)

    def _read_all_labels(self) -> np.ndarray:
        n = len(self)
        chunk = 1024
        parts = [
            np.stack([r["labels"] for r in self.__getitems__(range(i, min(n, i + chunk)))])
            for i in range(0, n, chunk)
        ]
        if not parts:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(parts).astype(np.float32)


def _as_record(raw: dict[str, Any]) -> dict[str, Any]:
    ident = raw["id"]
    return {
        "image": np.asarray(raw["image"], np.uint8),
        "labels": np.asarray(raw["labels"], np.float32),
        "id": ident.decode() if isinstance(ident, bytes) else str(ident),
    }


def load_source(dataset_dir: str | os.PathLike, split: str) -> ImageSource:
    """The random-access source of one split (`train`, `validation` or `test`)."""
    return ImageSource(dataset_dir, split)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(epath.Path(path).read_text())
