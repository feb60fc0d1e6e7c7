"""Configs load, and impossible values are refused before any compute, naming the field."""

import importlib
import subprocess
import sys

import pytest

from synthjax import experiment, schema
from synthjax.core.errors import ConfigError
from synthjax.stages import ORDER as STAGE_ORDER

CONFIGS = ["default", "quickstart", "cxr_256", "nih_sample", "ct_256"]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_configs_load_and_validate(name, arg):
    config = importlib.import_module(f"configs.{name}").get_config(arg)
    assert tuple(config.stages) == STAGE_ORDER
    schema.validate(config, num_devices=4)


@pytest.mark.parametrize("arg", ["ct", "ct,smoke", "smoke,ct"])
def test_quickstart_ct_variant(arg):
    config = importlib.import_module("configs.quickstart").get_config(arg)
    assert config.dataset.name == "rsna_ich" and config.dataset.phantom.enabled
    assert not config.dataset.drop_no_positive
    if "smoke" in arg:
        assert config.dataset.phantom.num_patients <= 100
    schema.validate(config, num_devices=4)


def _ct_smoke():
    return importlib.import_module("configs.ct_256").get_config("smoke")


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("dataset.ct.windows", "brain,lung_x", "unknown CT window"),
        ("dataset.ct.context", 5, "not 0, 1 or 2"),
        ("dataset.phantom.min_slices", 0, "not a range"),
    ],
)
def test_impossible_ct_values_are_refused(field, value, match):
    config = _ct_smoke()
    section, _, name = field.rpartition(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=match) as err:
        schema.validate(config, num_devices=4)
    assert field in str(err.value) and "Fix:" in str(err.value)


def test_a_dataset_without_phantom_needs_a_folder():
    config = _smoke()
    config.dataset.name = "folder"
    with pytest.raises(ConfigError, match="no built-in phantom"):
        schema.validate(config, num_devices=4)


@pytest.mark.parametrize(
    "name,arg,known",
    [("quickstart", "tiny", "ct, smoke"), ("default", "ct", "smoke"), ("ct_256", "smok", "smoke")],
)
def test_unknown_variant_is_refused_naming_the_known_ones(name, arg, known):
    with pytest.raises(ValueError, match=f"unknown config variant {arg!r}; known: {known}"):
        importlib.import_module(f"configs.{name}").get_config(arg)


def test_the_256_configs_are_the_studys_settings_at_256():
    cxr, ct = (importlib.import_module(f"configs.{n}").get_config() for n in ("cxr_256", "ct_256"))
    for c in (cxr, ct):
        assert (c.dataset.resolution, c.gan.cpd.batch_size, c.gan.train_kimg) == (256, 160, 16_000)
        assert (c.gan.fd.start_kimg, c.gan.prog.fade_kimg) == (9000, 1000)
    assert ct.dataset.name == "rsna_ich" and cxr.dataset.name == "chexpert"


def _smoke():
    return importlib.import_module("configs.quickstart").get_config("smoke")


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("gan.dcgan.batch_size", 18, "divisible by the 4 devices"),
        ("classifier.batch_size", 6, "divisible by the 4 devices"),
        ("dataset.resolution", 48, "power of two"),
        ("dataset.resolution", 128, "above base_resolution"),
        ("stages", ("prepare", "gan", "bogus"), "unknown stage"),
        ("stages", ("gan", "prepare"), "out of order"),
        ("gan.arch", "stylegan9", "not available"),
        ("dataset.uncertain_policy", "u_maybe", "not a policy"),
        ("evaluate.interval_level", "study", "not a level"),
        ("mesh.data", 3, "does not divide"),
        ("conv_lowering", "winograd", "unknown"),
        ("gan.loss", "hinge", "unknown"),
        ("gan.train_kimg", 0.0, "no images"),
        ("gan.bf16_resolution", 48, "power of two"),
        ("gan.ada.augmentations", "translate,flip", "unknown augmentation"),
        ("gan.ada.target", 1.5, "not a usable ADA target"),
        ("gan.ada.speed_kimg", 0.0, "not a usable ADA setting"),
        ("gan.ada.center", "median", "not a known centre"),
        ("gan.fd.reference_split", "holdout", "not a split"),
        ("gan.fd.features", "inception", "not a file"),
        ("gan.fd.batch_size", 30, "multiple of 4"),
    ],
)
def test_impossible_values_are_refused(field, value, match):
    config = _smoke()
    if field == "gan.train_kimg":
        config.gan.train_steps = 0
    _set(config, field, value)
    with pytest.raises(ConfigError, match=match) as err:
        schema.validate(config, num_devices=4)
    expected_field = "gan.fd.inception_weights" if value == "inception" else field
    assert expected_field in str(err.value) and "Fix:" in str(err.value)


def _set(config, field, value):
    *sections, name = field.split(".")
    for section in sections:
        config = config[section]
    config[name] = value


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("gan.prog.batch_sizes", "8:16,16:18", "16x16.*divisible by the 4 devices"),
        ("gan.prog.batch_sizes", "8:16", "no batch size for resolution"),
        ("gan.prog.start_resolution", 32, "not a power of two between 4 and the resolution"),
        ("gan.train_steps", 15, "before the GAN has grown to 16x16"),
    ],
)
def test_impossible_prog_schedules_are_refused(field, value, match):
    config = _smoke()
    config.gan.arch = "prog"
    schema.validate(config, num_devices=4)
    _set(config, field, value)
    with pytest.raises(ConfigError, match=match) as err:
        schema.validate(config, num_devices=4)
    assert "Fix:" in str(err.value)


def test_gan_selection_without_the_real_classifier_is_refused_before_compute(tmp_path):
    config = _smoke()
    config.stages = ("prepare", "gan")
    with pytest.raises(ConfigError, match="classifier_real has not run"):
        experiment.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w" / "prepare").exists()


def test_cli_refuses_before_compute(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "synthjax.main",
            "--config=configs/quickstart.py:smoke",
            f"--workdir={tmp_path / 'w'}",
            "--config.gan.dcgan.batch_size=18",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "gan.dcgan.batch_size" in proc.stderr and "Fix:" in proc.stderr
    assert not (tmp_path / "w" / "prepare").exists()
