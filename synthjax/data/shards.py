"""The shard format every dataset here is stored in: TFDS array_record + dataset_info.json.

TFDS builders write real datasets in it; `synthesize` writes synthetic ones with the same
features through this module, so `synthjax.data.loader.load_source` reads both. Shards are
written whole to a temporary name and renamed, so an interrupted writer leaves only
complete shards behind and can resume by skipping them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from etils import epath

from synthjax.data import remote

FILE_FORMAT = "array_record"


# The feature of a real record naming its patient (for patient-level statistics). Only the
# prepared real datasets have it; synthetic datasets never do, so no release can carry it.
PATIENT = "patient"


def image_features(
    image_shape: Sequence[int], num_labels: int, *, with_patient: bool = False
) -> tfds.features.FeaturesDict:
    """{"image": uint8[H, W, C] raw tensor, "labels": float32[K], "id": text}, and with
    `with_patient` (real datasets only) {"patient": text}, the source's patient id.

    The image is stored as its raw bytes: TFDS's default for a uint8 tensor, a protobuf
    list of 64-bit integers, is larger and far slower to write and parse (the numbers are
    in benchmarks/README.md).
    """
    features = {
        "image": tfds.features.Tensor(
            shape=tuple(image_shape), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
        ),
        "labels": tfds.features.Tensor(shape=(num_labels,), dtype=np.float32),
        "id": tfds.features.Text(),
    }
    if with_patient:
        features[PATIENT] = tfds.features.Text()
    return tfds.features.FeaturesDict(features)


def shard_template(dataset_dir: epath.Path, name: str, split: str) -> tfds.core.ShardedFileTemplate:
    return tfds.core.ShardedFileTemplate(
        data_dir=dataset_dir, dataset_name=name, split=split, filetype_suffix=FILE_FORMAT
    )


def shard_path(
    dataset_dir: epath.Path, name: str, split: str, index: int, count: int
) -> epath.Path:
    return shard_template(dataset_dir, name, split).sharded_filepath(
        shard_index=index, num_shards=count
    )


def write_shard(
    path: epath.Path, features: tfds.features.FeaturesDict, records: Iterable[Mapping[str, Any]]
) -> int:
    """Serialises `records` into one array_record file (atomically); returns the count.

    The writer opens local files only: a shard bound for a bucket is written to a local
    scratch file first and uploaded whole (`remote.upload`).
    """
    path = epath.Path(path)
    if remote.is_remote(path):
        fd, local = tempfile.mkstemp(dir=remote.scratch_dir(), prefix=f"{path.name}.")
        os.close(fd)
        try:
            n = write_shard(epath.Path(local), features, records)
            if n:
                remote.upload(local, path)
        finally:
            os.unlink(local)
        return n
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    writer = array_record_module.ArrayRecordWriter(os.fspath(tmp), "group_size:1")
    n = 0
    for record in records:
        writer.write(features.serialize_example(record))
        n += 1
    writer.close()
    tmp.replace(path)
    return n


def write_metadata(
    dataset_dir: epath.Path,
    *,
    name: str,
    features: tfds.features.FeaturesDict,
    shard_lengths: Mapping[str, Sequence[int]],
    label_names: Sequence[str],
    description: str,
    version: str = "1.0.0",
    metadata: Mapping[str, Any] | None = None,
    **info: Any,
) -> None:
    """Writes dataset_info.json & co. once every shard exists (this marks it complete).

    `metadata` joins `label_names` in the dataset's metadata; `info` (homepage, citation)
    goes to `tfds.core.DatasetInfo`.
    """
    split_infos = []
    for split, lengths in shard_lengths.items():
        paths = [shard_path(dataset_dir, name, split, i, len(lengths)) for i in range(len(lengths))]
        split_infos.append(
            tfds.core.SplitInfo(
                name=split,
                shard_lengths=[int(n) for n in lengths],
                num_bytes=sum(p.stat().length for p in paths),
                filename_template=shard_template(dataset_dir, name, split),
            )
        )
    tfds.folder_dataset.write_metadata(
        data_dir=dataset_dir,
        features=features,
        split_infos=split_infos,
        filename_template=shard_template(dataset_dir, name, "x"),
        check_data=False,  # its check reads through tf.data; the loader checks instead
        version=version,
        description=description,
        metadata=tfds.core.MetadataDict(label_names=list(label_names), **(metadata or {})),
        **info,
    )


def write_split(
    dataset_dir: epath.Path,
    *,
    name: str,
    split: str,
    features: tfds.features.FeaturesDict,
    records: Iterable[Mapping[str, Any]],
    shard_size: int,
) -> list[int]:
    """Streams `records` into shards of `shard_size`; returns the shard lengths.

    Memory holds one record at a time, whatever the split's size. Shards are written under
    temporary names (the total count is known only at the end), then renamed.
    """
    iterator = iter(records)
    parts: list[epath.Path] = []
    lengths: list[int] = []
    while True:
        chunk = itertools.islice(iterator, shard_size)
        part = dataset_dir / f".{name}-{split}.part{len(parts):05d}"
        count = write_shard(part, features, chunk)
        if count == 0:
            part.unlink(missing_ok=True)
            break
        parts.append(part)
        lengths.append(count)
        if count < shard_size:
            break
    for index, part in enumerate(parts):
        part.replace(shard_path(dataset_dir, name, split, index, len(parts)))
    return lengths


def records_sha256(sources: Mapping[str, Any], *, ordered: bool = True) -> str:
    """sha256 over every record's decoded (id, labels, image), split by split, in order.

    sources: {split: a source of records (`loader.load_source`)}. The decoded content, not
    the shard files: their bytes are serialized protos whose field order varies from one
    writer process to the next, for the same records. A source with patient ids
    (`ImageSource.patients`, real datasets) adds them, in order, after its records.
    `ordered=False`: the same records in any order and under any ids give the same digest
    (labels and image only, sorted).
    """
    digest = hashlib.sha256()
    for split, source in sources.items():
        digest.update(f"{split}:{len(source)}".encode())
        records = []
        for i in range(len(source)):
            record = source[i]
            one = hashlib.sha256() if not ordered else digest
            if ordered:
                one.update(str(record["id"]).encode())
            one.update(np.ascontiguousarray(record["labels"], np.float32).tobytes())
            one.update(np.ascontiguousarray(record["image"]).tobytes())
            if not ordered:
                records.append(one.digest())
        for one in sorted(records):
            digest.update(one)
        if ordered and getattr(source, "has_patients", False):
            digest.update("\0".join(source.patients.tolist()).encode())
    return digest.hexdigest()
