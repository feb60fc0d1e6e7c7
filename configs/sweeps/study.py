r"""The study's three benchmarks (PAPER.md), as numbers the sweeps beside this file share.

DuMont Schütte et al., npj Digit. Med. 4:141 (2021): number of label combinations, samples
per combination and resolution, each crossed with both generators. The per-class sizes are
the study's; every setting is nested (the top 4 combinations are inside the top 10, the
first 500 images of a combination inside its first 1,000). A dataset that has fewer images
of a kept combination than a setting asks for is refused at `prepare`, naming the
combination, never shrunk silently.

`get_config(arg)` here gives the benchmarks' base (`arg` = `cxr`, CheXpert, or `ct`, RSNA
brain CT); the sweep files `classes.py`, `samples.py` and `resolution.py` add `get_sweep`.
"""

from __future__ import annotations

import ml_collections

from configs import default
from synthjax.core import config_files

MODALITIES = ("cxr", "ct")
GENERATORS = ("cpd", "prog")

# Number of classes: the N most frequent combinations, with train images per combination
# (the smallest kept combination's share), and fixed validation / test images per class.
CLASSES = {
    "cxr": {
        "train_per_class": {20: 1450, 15: 1600, 10: 2000, 6: 2300, 4: 3900, 2: 6300},
        "validation_per_class": 190,
        "test_per_class": 170,
    },
    "ct": {
        "train_per_class": {10: 2500, 8: 3120, 6: 4170, 4: 6250, 2: 12500},
        "validation_per_class": 300,
        "test_per_class": 200,
    },
}

# Samples per class: chest uses the combinations with more than 7,400 images (CheXpert has
# three), brain CT the six most frequent.
SAMPLES = {
    "cxr": {
        "num_classes": 3,
        "train_per_class": (5950, 4500, 3000, 1500, 1000, 500, 400, 200),
        "validation_per_class": 750,
        "test_per_class": 750,
    },
    "ct": {
        "num_classes": 6,
        "train_per_class": (5400, 4500, 3000, 1500, 1000, 500, 300, 100),
        "validation_per_class": 500,
        "test_per_class": 500,
    },
}

# Resolution: 32/64/128 in the study's first version, 256/512 in its revision. The study
# does not say which class setting it used; we take the classes benchmark's 10 (chest) and
# 6 (brain) combinations with their per-class sizes.
RESOLUTIONS = (32, 64, 128, 256, 512)
RESOLUTION_CLASSES = {"cxr": 10, "ct": 6}


def resolution_settings(resolution: int) -> dict[str, object]:
    """The study's training lengths and batch sizes at one resolution, as overrides.

    12,000 / 14,000 / 16,000 kimg at most at 32 / 64 / 128 (16,000 above), FD early
    stopping from 7,000 / 7,000 / 9,000 kimg, prog-GAN phases of 1,400 kimg at 32 and 1,000
    above, cpD batch 256 (160 at 256, 64 at 512).
    """
    return {
        "dataset.resolution": resolution,
        "dataset.base_resolution": max(256, resolution),
        "gan.train_kimg": {32: 12_000.0, 64: 14_000.0}.get(resolution, 16_000.0),
        "gan.fd.start_kimg": 7_000.0 if resolution <= 64 else 9_000.0,
        # The single-phase GANs' batch (cpD's in the study; DCGAN follows it).
        "gan.cpd.batch_size": {256: 160, 512: 64}.get(resolution, 256),
        "gan.dcgan.batch_size": {256: 160, 512: 64}.get(resolution, 256),
        "gan.prog.fade_kimg": 1_400.0 if resolution <= 32 else 1_000.0,
        "gan.prog.stable_kimg": 1_400.0 if resolution <= 32 else 1_000.0,
    }


def modality(arg: str | None) -> str:
    """`cxr` (the default) or `ct` from a config argument (`:ct`; `:cxr` says the default)."""
    variants = config_files.parse_arg(arg, cxr=False, ct=False)
    if variants.cxr and variants.ct:
        raise ValueError(f"config argument {arg!r}: choose one modality of {MODALITIES}")
    return "ct" if variants.ct else "cxr"


def crossed(settings: list[dict[str, object]]) -> list[dict[str, object]]:
    """Each benchmark setting crossed with both generators (a setting's `name`, if it has
    one, gains `_arch-<arch>`). `launch.sweep` runs each with its seeds: three by default
    (`launch.sweep.DEFAULT_SEEDS`), others with `--seeds`."""
    runs = []
    for setting in settings:
        for arch in GENERATORS:
            run = {**setting, "gan.arch": arch}
            if "name" in setting:
                run["name"] = f"{setting['name']}_arch-{arch}"
            runs.append(run)
    return runs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The benchmarks' base: the study's settings at 32x32 on CheXpert or RSNA brain CT."""
    c = default.get_config()
    c.gan.recipe = "study"  # the study's design exactly; sweeps may cross it with synthjax
    c.gan.select = "fd"  # and its model selection
    use_resolution(c, 32)
    if modality(arg) == "ct":
        c.dataset.name = "rsna_ich"
        c.dataset.drop_no_positive = False  # "no finding" is one of the study's classes
        c.dataset.ct.windows = "brain"  # the study's single window
    return c


def benchmark_config(arg: str | None, sizes: dict[str, dict]) -> ml_collections.ConfigDict:
    """The base with one benchmark's fixed sizes (`CLASSES` or `SAMPLES`) for the modality:
    the number of combinations where it is fixed, validation and test images per class."""
    c = get_config(arg)
    fixed = sizes[modality(arg)]
    for field in ("num_classes", "validation_per_class", "test_per_class"):
        if field in fixed:
            c.dataset[field] = fixed[field]
    return c


def use_resolution(c: ml_collections.ConfigDict, resolution: int) -> None:
    """Sets the study's settings at `resolution` (`resolution_settings`) in `c`."""
    for field, value in resolution_settings(resolution).items():
        config_files.set_field(c, field, value)
