"""A dataset build killed halfway is never read as complete, and decoding on 1 or 2 cores
writes the same records."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from data_fixtures import write_cxr_phantom

from synthjax.core.workdir import SPLITS
from synthjax.data import chexpert
from synthjax.data.loader import load_source

RESOLUTION, BASE = 16, 64


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    write_cxr_phantom(root, num_patients=300, image_size=BASE, seed=3)
    return root


def _records(dataset_dir):
    out = {}
    for split in SPLITS:
        source = load_source(dataset_dir, split)
        out[split] = [
            (r["id"], r["image"].tobytes(), r["labels"].tobytes())
            for r in (source[i] for i in range(len(source)))
        ]
    return out


def _prepare(raw, data_dir, workers):
    return chexpert.prepare_chexpert(
        raw, data_dir, resolution=RESOLUTION, base_resolution=BASE, workers=workers
    )


def test_one_and_two_workers_write_the_same_records(raw, tmp_path):
    one, report_one = _prepare(raw, tmp_path / "one", workers=1)
    two, report_two = _prepare(raw, tmp_path / "two", workers=2)
    assert report_one["counts"] == report_two["counts"]
    assert _records(one) == _records(two)


_KILLABLE = """
import sys
from synthjax.data import chexpert
chexpert.prepare_chexpert(sys.argv[1], sys.argv[2], resolution={r}, base_resolution={b},
                          workers=1)
"""


def test_a_killed_build_is_rebuilt_not_reused(raw, tmp_path):
    data_dir = tmp_path / "data"
    code = _KILLABLE.format(r=RESOLUTION, b=BASE)
    proc = subprocess.Popen([sys.executable, "-c", code, str(raw), str(data_dir)])
    try:
        deadline = time.monotonic() + 120
        # Kill it once it has started writing shards into its temporary directory.
        while time.monotonic() < deadline and proc.poll() is None:
            if any(data_dir.glob("chexpert/*/incomplete.*/*")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the build finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    config_dir = data_dir / "chexpert" / chexpert.config_name(RESOLUTION, "u_ones", True, BASE)
    assert list(config_dir.glob("incomplete.*")), "the killed build left no temporary dir"
    assert not (config_dir / str(chexpert.Chexpert.VERSION) / "dataset_info.json").exists()

    dataset_dir, report = _prepare(raw, data_dir, workers=1)
    assert not list(config_dir.glob("incomplete.*")), "the killed build's files were kept"
    clean_dir, clean_report = _prepare(raw, tmp_path / "clean", workers=1)
    assert report["counts"] == clean_report["counts"]
    assert _records(dataset_dir) == _records(clean_dir)
    assert sum(len(load_source(dataset_dir, s)) for s in SPLITS) == report["counts"]["kept"]
    assert np.isfinite(load_source(dataset_dir, "train").labels).all()


def test_runs_sharing_a_data_dir_read_their_own_phantoms(tmp_path):
    """A sweep over phantom settings: one `data_dir`, two phantoms, two prepared datasets.

    The builder's config names the resolution and label policy, not the raw folder; keyed
    by that alone, the second run read the first run's shards (a CT calibration sweep over
    `subtlety` once trained three classifiers on one dataset)."""
    from pathlib import Path

    from synthjax import experiment
    from synthjax.core.config_files import load

    def prepare(subtlety, name):
        config = load(str(Path(__file__).resolve().parents[1] / "configs/quickstart.py:smoke"))
        config.stages = ("prepare",)
        config.dataset.phantom.subtlety = subtlety
        config.dataset.phantom.dir = str(tmp_path / "phantoms")
        config.dataset.data_dir = str(tmp_path / "data")
        return experiment.run(config, str(tmp_path / name))["prepare"]

    faint, plain, again = prepare(8.0, "faint"), prepare(1.0, "plain"), prepare(8.0, "again")
    assert faint["dataset_dir"] != plain["dataset_dir"]
    assert again["dataset_dir"] == faint["dataset_dir"]  # the same source is built once
    images = {
        name: np.stack([src[i]["image"] for i in range(len(src))])
        for name, src in (
            ("faint", load_source(faint["dataset_dir"], "train")),
            ("plain", load_source(plain["dataset_dir"], "train")),
        )
    }
    assert images["faint"].shape == images["plain"].shape  # labels do not change
    assert not np.array_equal(images["faint"], images["plain"])
