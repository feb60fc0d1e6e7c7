"""The study's sweeps: what they expand into, that every run's config is valid, that the
per-class sizes fit CheXpert's real label frequencies, refusals, and what runs share."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.sweeps import study
from launch import sweep
from synthjax import experiment, schema
from synthjax.core import config_files
from synthjax.core.errors import ConfigError
from synthjax.core.workdir import Run
from synthjax.data.subsets import select_subset
from synthjax.stages import prepare

CHEXPERT_TABLE = (
    Path(__file__).parents[2] / "shared" / "data" / ("chexpert_frontal_label_combinations.csv")
)


def _resolved(config: str, run: dict):
    """The run's config as `synthjax.main` would see it: get_config(arg) + overrides."""
    return sweep.resolve_config(config, run["overrides"])


@pytest.mark.parametrize(
    "config, runs",
    [
        ("configs/sweeps/classes.py", 6 * 2 * 3),
        ("configs/sweeps/classes.py:ct", 5 * 2 * 3),
        ("configs/sweeps/samples.py", 8 * 2 * 3),
        ("configs/sweeps/samples.py:ct", 8 * 2 * 3),
        ("configs/sweeps/resolution.py", 5 * 2 * 3),
        ("configs/sweeps/resolution.py:ct", 5 * 2 * 3),
    ],
)
def test_study_sweeps_expand_into_valid_runs(config, runs, tmp_path):
    expanded = sweep.expand(config, str(tmp_path))
    assert len(expanded) == runs
    assert len({r["workdir"] for r in expanded}) == runs
    for run in expanded:
        c = _resolved(config, run)
        schema.validate(c, num_devices=1)
        assert c.gan.arch in study.GENERATORS and c.seed in sweep.DEFAULT_SEEDS
        assert c.dataset.data_dir == f"{tmp_path}/data"  # prepared once, shared
        assert c.dataset.name == ("rsna_ich" if config.endswith(":ct") else "chexpert")
        assert c.dataset.samples_per_class > 0
        assert c.dataset.validation_per_class > 0 and c.dataset.test_per_class > 0


def test_classes_sweep_has_the_studys_per_class_sizes(tmp_path):
    runs = [
        _resolved("configs/sweeps/classes.py", r)
        for r in sweep.expand("configs/sweeps/classes.py", str(tmp_path))
    ]
    sizes = {(c.dataset.num_classes, c.dataset.samples_per_class) for c in runs}
    assert sizes == {(20, 1450), (15, 1600), (10, 2000), (6, 2300), (4, 3900), (2, 6300)}
    assert {(c.dataset.validation_per_class, c.dataset.test_per_class) for c in runs} == {
        (190, 170)
    }
    assert {c.dataset.resolution for c in runs} == {32}
    assert {c.gan.train_kimg for c in runs} == {12_000.0}
    ct = [
        _resolved("configs/sweeps/samples.py:ct", r)
        for r in sweep.expand("configs/sweeps/samples.py:ct", str(tmp_path))
    ]
    assert {c.dataset.num_classes for c in ct} == {6}
    assert sorted({c.dataset.samples_per_class for c in ct}) == [
        100,
        300,
        500,
        1000,
        1500,
        3000,
        4500,
        5400,
    ]
    assert {c.dataset.ct.windows for c in ct} == {"brain"}


def test_resolution_sweep_uses_the_studys_lengths_and_batches(tmp_path):
    runs = sweep.expand("configs/sweeps/resolution.py", str(tmp_path))
    assert runs[0]["name"] == "resolution-32_arch-cpd_seed-0"
    by_res = {}
    for run in runs:
        c = _resolved("configs/sweeps/resolution.py", run)
        by_res[c.dataset.resolution] = c
        assert c.dataset.base_resolution >= c.dataset.resolution
        assert c.dataset.num_classes == 10 and c.dataset.samples_per_class == 2000
    assert {r: c.gan.train_kimg for r, c in by_res.items()} == {
        32: 12_000,
        64: 14_000,
        128: 16_000,
        256: 16_000,
        512: 16_000,
    }
    assert {r: c.gan.fd.start_kimg for r, c in by_res.items()} == {
        32: 7_000,
        64: 7_000,
        128: 9_000,
        256: 9_000,
        512: 9_000,
    }
    assert {r: c.gan.cpd.batch_size for r, c in by_res.items()} == {
        32: 256,
        64: 256,
        128: 256,
        256: 160,
        512: 64,
    }
    assert by_res[32].gan.prog.fade_kimg == 1400 and by_res[64].gan.prog.fade_kimg == 1000


def _chexpert_splits(top: int = 24):
    """Label vectors of CheXpert's frontal images (the real counts, u_ones) for its `top`
    most frequent combinations, split 80/10/10 within each combination."""
    table = pd.read_csv(CHEXPERT_TABLE)
    table = table[table.uncertain_policy == "u_ones"].nlargest(top, "count")
    labels = table.drop(columns=["uncertain_policy", "count"]).to_numpy(np.float32)
    splits = {"train": [], "validation": [], "test": []}
    for vector, count in zip(labels, table["count"], strict=True):
        n_train, n_val = int(count * 0.8), int(count * 0.1)
        for split, n in (
            ("train", n_train),
            ("validation", n_val),
            ("test", count - n_train - n_val),
        ):
            splits[split].append(np.repeat(vector[None], n, axis=0))
    return {s: np.concatenate(v) for s, v in splits.items()}


@pytest.mark.skipif(not CHEXPERT_TABLE.exists(), reason="needs ../shared/data")
def test_study_settings_fit_chexperts_real_frequencies_and_nest():
    splits = _chexpert_splits()
    previous = None
    for n, per_class in sorted(study.CLASSES["cxr"]["train_per_class"].items()):
        subset = select_subset(
            splits,
            num_classes=n,
            samples_per_class=per_class,
            validation_per_class=190,
            test_per_class=170,
        )
        counts = subset.counts(splits)
        assert counts == {"train": [per_class] * n, "validation": [190] * n, "test": [170] * n}
        if previous is not None:  # the top combinations of fewer classes are among these
            np.testing.assert_array_equal(subset.combos[: len(previous)], previous)
        previous = subset.combos
    spc = study.SAMPLES["cxr"]
    small, large = (
        select_subset(
            splits,
            num_classes=spc["num_classes"],
            samples_per_class=k,
            validation_per_class=spc["validation_per_class"],
            test_per_class=spc["test_per_class"],
            seed=4,
        )
        for k in (200, 5950)
    )
    assert small.counts(splits)["train"] == [200] * 3
    assert large.counts(splits)["train"] == [5950] * 3
    assert set(small.indices["train"]) <= set(large.indices["train"])
    np.testing.assert_array_equal(small.indices["test"], large.indices["test"])


def test_a_setting_the_data_cannot_fill_is_refused_not_shrunk():
    splits = {
        "train": np.array([[1, 0]] * 30 + [[0, 1]] * 12, np.float32),
        "validation": np.array([[1, 0]] * 6 + [[0, 1]] * 3, np.float32),
        "test": np.array([[1, 0]] * 5 + [[0, 1]] * 5, np.float32),
    }
    names = ["Edema", "Pneumonia"]
    with pytest.raises(ConfigError, match=r"dataset\.samples_per_class.*#2 \(Pneumonia\), has 12"):
        select_subset(splits, num_classes=2, samples_per_class=20, label_names=names)
    with pytest.raises(ConfigError, match=r"dataset\.validation_per_class.*has 3.*<= 3"):
        select_subset(splits, num_classes=2, validation_per_class=4, label_names=names)
    ok = select_subset(
        splits, num_classes=2, samples_per_class=12, validation_per_class=3, test_per_class=5
    )
    assert ok.counts(splits) == {"train": [12, 12], "validation": [3, 3], "test": [5, 5]}
    # Validation and test caps are nested too.
    more = select_subset(splits, num_classes=2, validation_per_class=2)
    fewer = select_subset(splits, num_classes=2, validation_per_class=1)
    assert set(fewer.indices["validation"]) <= set(more.indices["validation"])


def test_runs_differing_only_in_the_generator_share_the_real_classifier(tmp_path):
    runs = sweep.expand("configs/quickstart.py", str(tmp_path))
    by_name = {r["name"]: r for r in runs}
    cpd = by_name["samples_per_class-35_arch-cpd_seed-0"]
    prog = by_name["samples_per_class-35_arch-prog_seed-0"]
    other = by_name["samples_per_class-70_arch-prog_seed-0"]
    other_seed = by_name["samples_per_class-35_arch-prog_seed-1"]
    assert cpd["real_key"] == prog["real_key"] != other["real_key"]
    assert other_seed["real_key"] != prog["real_key"]  # another seed trains its own
    assert sweep.share_real_stages(prog, runs) is None  # nothing finished yet
    for stage in sweep.REAL_STAGES:
        (Path(cpd["workdir"]) / stage).mkdir(parents=True)
        (Path(cpd["workdir"]) / stage / "summary.json").write_text(json.dumps({"stage": stage}))
    assert sweep.share_real_stages(other, runs) is None  # other data: trains its own
    assert sweep.share_real_stages(other_seed, runs) is None  # another seed: its own
    assert sweep.share_real_stages(prog, runs) == cpd["name"]
    for stage in sweep.REAL_STAGES:
        assert json.loads((Path(prog["workdir"]) / stage / "summary.json").read_text()) == {
            "stage": stage
        }
    assert sweep.share_real_stages(prog, runs) is None  # it has its own now


def test_another_sweeps_runs_beside_it_share_their_real_classifier(tmp_path):
    # The dcgan variant of the reproduction sweep, run into the workdir of the cpd/prog one:
    # its runs differ from theirs in gan.* only, so they start from their real stages.
    main, variant = "configs/sweeps/reproduction.py", "configs/sweeps/reproduction.py:dcgan"
    donors = {r["name"]: r for r in sweep.expand(main, str(tmp_path))}
    runs = sweep.expand(variant, str(tmp_path))
    assert {sweep.resolve(variant, r["overrides"])["gan"]["arch"] for r in runs} == {"dcgan"}
    dcgan = runs[0]
    cpd = donors[dcgan["name"].replace("dcgan", "cpd")]
    assert sweep.share_real_stages(dcgan, runs, variant) is None  # nothing finished yet
    for name in (cpd["name"], cpd["name"].replace("seed-0", "seed-1")):
        workdir = Path(donors[name]["workdir"])
        config = sweep.resolve(main, donors[name]["overrides"])
        workdir.mkdir(parents=True)
        (workdir / "config.json").write_text(json.dumps(config))
    for stage in sweep.REAL_STAGES:  # only the seed-0 run has finished its real stages
        (Path(cpd["workdir"]) / stage).mkdir()
        (Path(cpd["workdir"]) / stage / "summary.json").write_text(json.dumps({"s": stage}))
    other_seed = next(r for r in runs if r["name"] == dcgan["name"].replace("seed-0", "seed-1"))
    assert sweep.share_real_stages(other_seed, runs, variant) is None
    assert sweep.share_real_stages(dcgan, runs) is None  # without the config: this sweep only
    assert sweep.share_real_stages(dcgan, runs, variant) == cpd["name"]
    copied = Path(dcgan["workdir"]) / "classifier_real" / "summary.json"
    assert json.loads(copied.read_text()) == {"s": "classifier_real"}
    # A field a real stage reads (the classifier's length) keeps a run from sharing.
    longer = dict(runs[1], overrides=[*runs[1]["overrides"], "classifier.train_steps=301"])
    prog = donors[runs[1]["name"].replace("dcgan", "cpd")]
    workdir = Path(prog["workdir"])
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(sweep.resolve(main, prog["overrides"])))
    for stage in sweep.REAL_STAGES:
        (workdir / stage).mkdir()
        (workdir / stage / "summary.json").write_text("{}")
    assert sweep.share_real_stages(longer, runs, variant) is None
    assert sweep.share_real_stages(runs[1], runs, variant) == prog["name"]


def test_runs_of_any_seed_share_one_phantom_per_setting(tmp_path):
    c = config_files.load("configs/quickstart.py:smoke")
    c.dataset.phantom.num_patients = 12
    c.dataset.phantom.dir = str(tmp_path / "phantoms")
    roots = []
    for seed, phantom_seed in ((0, 0), (5, 0), (0, 1)):
        c.seed, c.dataset.phantom.seed = seed, phantom_seed
        roots.append(prepare.ensure_phantom(Run(c, tmp_path / f"run{seed}", mesh=None)))
    assert roots[0] == roots[1] != roots[2]
    assert all((r / "COMPLETE.json").exists() for r in roots)
    assert sorted(p.name for p in (tmp_path / "phantoms").iterdir() if p.is_dir()) == sorted(
        {r.name for r in roots}
    )


STUDY_SWEEPS = (
    "configs/sweeps/reproduction.py",
    "configs/sweeps/reproduction.py:dcgan",
    "configs/sweeps/classes.py",
    "configs/sweeps/samples.py:ct",
    "configs/sweeps/resolution.py",
)


@pytest.mark.parametrize("config", STUDY_SWEEPS)
def test_each_setting_runs_with_three_seeds_that_differ_only_in_seed(config, tmp_path):
    runs = sweep.expand(config, str(tmp_path))
    by_setting: dict[str, list[dict]] = {}
    for run in runs:
        by_setting.setdefault(run["setting"], []).append(run)
        assert run["name"] == f"{run['setting']}_seed-{run['seed']}"
        assert run["values"]["seed"] == run["seed"]
    assert len(runs) == 3 * len(by_setting)
    for setting, group in by_setting.items():
        assert [r["seed"] for r in group] == [0, 1, 2], setting
        first = _resolved(config, group[0]).to_dict()
        for other in group[1:]:
            changes = experiment.config_changes(first, _resolved(config, other).to_dict())
            assert [c.field for c in changes] == ["seed"], setting
    # Seeds are the outer loop: the first pass is a whole one-seed sweep.
    assert {r["seed"] for r in runs[: len(by_setting)]} == {0}


def test_seeds_from_the_command_line_and_refusals(tmp_path, monkeypatch, capsys):
    config = "configs/quickstart.py:smoke"
    runs = sweep.expand(config, str(tmp_path), seeds=[4, 7])
    assert [r["name"] for r in runs][:2] == [
        "samples_per_class-35_arch-cpd_seed-4",
        "samples_per_class-35_arch-prog_seed-4",
    ]
    assert {r["seed"] for r in runs} == {4, 7} and len(runs) == 8
    assert runs[0]["overrides"][-1] == "seed=4"
    assert sweep.parse_seeds("0, 1,2") == (0, 1, 2)
    for bad in ("", "0,0", "a"):
        with pytest.raises(SystemExit):
            sweep.parse_seeds(bad)
    args = [f"--config={config}", f"--workdir={tmp_path}", "--seeds=3", "--dry-run"]
    assert sweep.main(args) == 0
    assert "4 runs (4 settings x seeds 3)" in capsys.readouterr().out

    # A sweep whose entries set the seed themselves would mix settings and seeds: refused.
    file = tmp_path / "seeded.py"
    file.write_text(
        "from configs import quickstart\n"
        "get_config = quickstart.get_config\n"
        "SEEDS = (5,)\n"
        "def get_sweep(arg=None):\n"
        "    return [{'gan.arch': 'cpd'}]\n"
    )
    assert [r["name"] for r in sweep.expand(str(file), str(tmp_path))] == ["arch-cpd_seed-5"]
    file.write_text(file.read_text().replace("'cpd'}", "'cpd', 'seed': 1}"))
    with pytest.raises(SystemExit):
        sweep.expand(str(file), str(tmp_path))
    assert "sets seed" in capsys.readouterr().err
