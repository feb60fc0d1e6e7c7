"""The loader's patient ids: a real dataset's shards keep one per record, outside the records;
shards written as synthetic ones are (no patient feature) have none to give."""

import numpy as np
import pytest

from synthjax.core.errors import DataNotFoundError
from synthjax.data import loader, shards


def _write(dataset_dir, with_patient):
    features = shards.image_features((4, 4, 1), 2, with_patient=with_patient)
    records = [
        {
            "image": np.full((4, 4, 1), i, np.uint8),
            "labels": np.eye(2, dtype=np.float32)[i % 2],
            "id": f"r{i}",
            **({shards.PATIENT: f"p{i // 3}"} if with_patient else {}),
        }
        for i in range(7)
    ]
    lengths = shards.write_split(
        dataset_dir, name="toy", split="test", features=features, records=records, shard_size=4
    )
    shards.write_metadata(
        dataset_dir,
        name="toy",
        features=features,
        shard_lengths={"test": lengths},
        label_names=["a", "b"],
        description="toy",
    )
    return loader.load_source(dataset_dir, "test")


def test_patients_of_a_real_split_in_record_order_and_cached(tmp_path):
    source = _write(tmp_path, with_patient=True)
    assert source.has_patients
    assert source.patients.tolist() == ["p0", "p0", "p0", "p1", "p1", "p1", "p2"]
    assert set(source[0]) == {"image", "labels", "id"}  # not in the records
    assert (tmp_path / "patients-test.npy").exists()
    assert loader.load_source(tmp_path, "test").patients.tolist() == source.patients.tolist()


def test_synthetic_style_shards_have_no_patients(tmp_path):
    source = _write(tmp_path, with_patient=False)
    assert not source.has_patients
    with pytest.raises(DataNotFoundError, match="keeps no patient ids"):
        _ = source.patients
    assert not list(tmp_path.glob("patients-*.npy"))
