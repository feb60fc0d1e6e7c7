"""The config's schema: every section checked once, when a run starts, before any compute.

`validate(config, num_devices)` refuses an impossible config with a `ConfigError` naming
the field, the problem and the fix. Each section has its own small check, in the order a
run meets them: the stage list, the dataset, the devices (the mesh's data axis every
global batch must split over), the classifiers, the GAN (design, schedule, augmentation,
model selection), synthesis and its privacy audit, evaluation. The values a field may take
are defined once, in the library module that gives them meaning, and imported here; the
library code that reads a field can then trust it.

`check_selection_inputs` is the one check that needs the workdir: GAN model selection
reads the real-data classifier, which a run must train or find finished.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import ml_collections

from synthjax.core.errors import ConfigError
from synthjax.core.workdir import SPLITS
from synthjax.data.registry import DATASETS, PHANTOM_DATASETS
from synthjax.stages import ORDER as STAGE_ORDER
from synthjax.train import recipes
from synthjax.train.schedule import build_schedule


def require(ok: bool, field: str, problem: str, fix: str) -> None:
    """Raises ConfigError(field, problem, fix) unless `ok`."""
    if not ok:
        raise ConfigError(field, problem, fix)


def is_power_of_two(value: int, low: int = 4) -> bool:
    return isinstance(value, int) and value >= low and value & (value - 1) == 0


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Refuses impossible settings before any compute, naming the field and the fix."""
    check_stages(config.stages)
    check_dataset(config.dataset)
    data = data_devices(config, num_devices)
    check_classifier(config.classifier, data)
    check_synthesize(config.synthesize, data)
    check_gan(config.gan, config.dataset.resolution, data)
    check_privacy(config.privacy)
    check_evaluate(config.evaluate, config.dataset.resolution)


def check_stages(stages: tuple[str, ...]) -> None:
    stages = tuple(stages)
    unknown = [s for s in stages if s not in STAGE_ORDER]
    require(
        not unknown, "stages", f"unknown stage(s) {unknown}", f"choose from {list(STAGE_ORDER)}"
    )
    order = [STAGE_ORDER.index(s) for s in stages]
    require(
        order == sorted(order) and len(set(order)) == len(order),
        "stages",
        f"{list(stages)} is out of order or repeats a stage",
        f"list them in pipeline order: {list(STAGE_ORDER)}",
    )


def check_dataset(ds: ml_collections.ConfigDict) -> None:
    """Which data, at which sizes, with which phantom; CT windows for brain CT."""
    from synthjax.data.chexpert import UNCERTAIN_POLICIES
    from synthjax.data.subsets import SUBSET_RULES

    require(
        ds.name in DATASETS,
        "dataset.name",
        f"{ds.name!r} is not a dataset here",
        f"use one of {list(DATASETS)}",
    )
    for field in ("resolution", "base_resolution"):
        require(
            is_power_of_two(ds[field]) and ds[field] <= 1024,
            f"dataset.{field}",
            f"{ds[field]} is not a power of two between 4 and 1024",
            "use 32, 64, 128, 256, 512 or 1024",
        )
    require(
        ds.resolution <= ds.base_resolution,
        "dataset.resolution",
        f"{ds.resolution} is above base_resolution {ds.base_resolution}",
        f"set dataset.base_resolution >= {ds.resolution}",
    )
    require(
        ds.uncertain_policy in UNCERTAIN_POLICIES,
        "dataset.uncertain_policy",
        f"{ds.uncertain_policy!r} is not a policy",
        "use 'u_ones' (the study) or 'u_zeros'",
    )
    if ds.name == "rsna_ich":
        check_ct(ds.ct)
    require(
        not ds.phantom.enabled or ds.manual_dir or ds.name in PHANTOM_DATASETS,
        "dataset.phantom.enabled",
        f"there is no built-in phantom for {ds.name!r}",
        f"pass --config.dataset.manual_dir, or use a dataset among {list(PHANTOM_DATASETS)}",
    )
    require(
        1 <= ds.phantom.min_slices <= ds.phantom.max_slices,
        "dataset.phantom.min_slices",
        f"{ds.phantom.min_slices}..{ds.phantom.max_slices} is not a range of slices",
        "use 1 <= min_slices <= max_slices",
    )
    for field in SUBSET_RULES:
        require(ds[field] >= 0, f"dataset.{field}", f"{ds[field]} is negative", "use 0 or more")


def check_ct(ct: ml_collections.ConfigDict) -> None:
    from synthjax.data.dicom import parse_windows  # numpy + pydicom only
    from synthjax.data.rsna_ich import CONTEXTS

    require_parsed("dataset.ct.windows", "e.g. 'brain,subdural,bone'", parse_windows, ct.windows)
    require(
        ct.context in CONTEXTS,
        "dataset.ct.context",
        f"{ct.context} is not 0, 1 or 2",
        "use 0 (the slice alone) or 1 (with the slices above and below)",
    )


def require_parsed(field: str, fix: str, parse: Callable[..., Any], *args: Any) -> Any:
    """parse(*args), its ValueError refused as a ConfigError naming `field` and `fix`."""
    try:
        return parse(*args)
    except ValueError as error:
        raise ConfigError(field, str(error), fix) from None


def data_devices(config: ml_collections.ConfigDict, num_devices: int) -> int:
    """The devices on the mesh's data axis (`mesh.data`, -1 = all), after checking it and
    how convolutions are lowered: every global batch must split evenly over them."""
    from synthjax.models.layers import CONV_LOWERINGS

    lowerings = ("auto", *CONV_LOWERINGS)
    require(
        config.conv_lowering in lowerings,
        "conv_lowering",
        f"{config.conv_lowering!r} is unknown",
        f"use one of {list(lowerings)}",
    )
    data = config.mesh.data if config.mesh.data != -1 else num_devices
    require(
        data > 0 and num_devices % data == 0,
        "mesh.data",
        f"{config.mesh.data} does not divide the {num_devices} devices",
        f"use -1 (all) or a divisor of {num_devices}",
    )
    return data


def check_batch(field: str, batch: int, data: int, where: str = "") -> None:
    """A global batch (`where`: at which resolution) that the data axis splits evenly."""
    require(
        batch > 0 and batch % data == 0,
        field,
        f"global batch {batch}{where} is not divisible by the {data} devices on the data axis",
        f"use a multiple of {data}",
    )


def check_classifier(cl: ml_collections.ConfigDict, data: int) -> None:
    from synthjax.train.classifier import ARCHS

    require(
        cl.arch in ARCHS,
        "classifier.arch",
        f"{cl.arch!r} is unknown",
        f"use one of {list(ARCHS)}",
    )
    check_batch("classifier.batch_size", cl.batch_size, data)
    check_batch("classifier.eval_batch_size", cl.eval_batch_size, data)
    require(
        cl.train_steps > 0, "classifier.train_steps", "must be positive", "use a step count > 0"
    )
    check_classifier_protocol(cl)


def check_classifier_protocol(cl: ml_collections.ConfigDict) -> None:
    """The input protocol, its resolution and the weights file (`classifier.augment` is a
    bool, which the locked ConfigDict enforces)."""
    from synthjax.train.classifier_inputs import PROTOCOLS

    require(
        cl.protocol in PROTOCOLS,
        "classifier.protocol",
        f"{cl.protocol!r} is not a protocol",
        f"use one of {list(PROTOCOLS)}",
    )
    # DenseNet-121 halves the side 5 times: below 32 its last block would have no pixels.
    require(
        cl.input_resolution >= 32,
        "classifier.input_resolution",
        f"{cl.input_resolution!r} is not a side of at least 32 pixels",
        "use 224 (the study's) or e.g. 64 for a CPU",
    )
    if not cl.weights:
        return
    require(
        cl.protocol == "study" and cl.arch == "densenet121",
        "classifier.weights",
        f"ImageNet DenseNet-121 weights need classifier.protocol=study and "
        f"classifier.arch=densenet121 (got {cl.protocol!r}, {cl.arch!r})",
        "set both, or leave classifier.weights empty",
    )
    require(
        os.path.isfile(cl.weights),
        "classifier.weights",
        f"{cl.weights!r} is not a file",
        "convert torchvision's densenet121 state_dict once with "
        "scripts/convert_densenet121.py and pass the .npz, or leave it empty (random weights)",
    )


def check_synthesize(synthesize: ml_collections.ConfigDict, data: int) -> None:
    check_batch("synthesize.batch_size", synthesize.batch_size, data)


def check_gan(gan: ml_collections.ConfigDict, resolution: int, data: int) -> None:
    """The GAN's fields: architecture, schedule, losses, augmentation, FD selection."""
    check_gan_design(gan)
    check_gan_schedule(gan, resolution, data)
    require(
        gan.bf16_resolution == 0 or is_power_of_two(gan.bf16_resolution),
        "gan.bf16_resolution",
        f"{gan.bf16_resolution} is not 0 or a power of two",
        "use 0 (float32 throughout) or e.g. 64 (bfloat16 convolutions from 64x64 up)",
    )
    require(gan.r1_interval > 0, "gan.r1_interval", "must be positive", "use e.g. 16")
    check_ada(gan.ada)
    check_gan_selection(gan, data)


def check_gan_design(gan: ml_collections.ConfigDict) -> None:
    from synthjax.train.gan_models import ARCHS as GAN_ARCHS

    require(gan.arch in GAN_ARCHS, "gan.arch", f"{gan.arch!r} is not available", f"use {GAN_ARCHS}")
    require(
        gan.recipe in recipes.RECIPES,
        "gan.recipe",
        f"{gan.recipe!r} is not a recipe",
        f"use one of {list(recipes.RECIPES)}",
    )
    try:
        recipes.resolve(gan)
    except ValueError as error:
        field = str(error).split("=")[0]
        raise ConfigError(field, str(error), "leave it '' for the recipe's choice") from None


def check_gan_schedule(gan: ml_collections.ConfigDict, resolution: int, data: int) -> None:
    """The training length, prog's growth, and every phase's batch on the data axis."""
    require(
        gan.train_steps > 0 or gan.train_kimg > 0,
        "gan.train_kimg",
        "the GAN would train for no images",
        "set gan.train_kimg (thousands of images) or gan.train_steps > 0",
    )
    prog = gan.arch == "prog"
    if prog:
        start = gan.prog.start_resolution
        require(
            is_power_of_two(start) and start <= resolution,
            "gan.prog.start_resolution",
            f"{start} is not a power of two between 4 and the resolution {resolution}",
            "use 8 (the study) or another power of two <= dataset.resolution",
        )
    field = "gan.prog.batch_sizes" if prog else f"gan.{gan.arch}.batch_size"
    try:
        schedule = build_schedule(gan, resolution)
    except ValueError as error:
        raise ConfigError(
            field if "batch" in str(error) else "gan.train_kimg",
            str(error),
            "see configs/default.py for the study's schedule",
        ) from None
    for phase in schedule.phases:
        b = phase.batch_size
        where = f" (at {phase.resolution}x{phase.resolution})" if prog else ""
        check_batch(field, b, data, where)
        group = min(gan.mbstd_group_size, b // data)
        require(
            group > 0 and (b // data) % group == 0,
            "gan.mbstd_group_size",
            f"group {gan.mbstd_group_size} does not divide the per-device batch {b // data}{where}",
            "use a per-device GAN batch that is a multiple of the group size",
        )


def check_ada(ada: ml_collections.ConfigDict) -> None:
    """Adaptive discriminator augmentation: which augmentations, and how p adapts."""
    from synthjax.train.augment import ADA_CENTERS, parse_augmentations

    require_parsed(
        "gan.ada.augmentations", "e.g. 'translate,cutout'", parse_augmentations, ada.augmentations
    )
    require(
        0.0 < ada.target < 1.0,
        "gan.ada.target",
        f"{ada.target} is not a usable ADA target",
        "use 0 < target < 1 (0.6 is ADA's)",
    )
    require(
        ada.center in ADA_CENTERS,
        "gan.ada.center",
        f"{ada.center!r} is not a known centre for ADA's sign",
        "use 'auto', 'zero' or 'midpoint'",
    )
    require(
        0.0 <= ada.start_p <= 1.0,
        "gan.ada.start_p",
        f"{ada.start_p} is not a probability",
        "use 0 (ADA's) up to about 0.5",
    )
    for field in ("interval", "speed_kimg"):
        require(
            ada[field] > 0,
            f"gan.ada.{field}",
            f"{ada[field]} is not a usable ADA setting",
            "use a positive value (ADA: interval 4, speed_kimg 500)",
        )


def check_gan_selection(gan: ml_collections.ConfigDict, data: int) -> None:
    """Model selection by Fréchet distance (`gan.fd`) and the rule that picks the best."""
    from synthjax.train.fd_monitor import FD_FEATURES, SELECTIONS

    require(
        gan.select in SELECTIONS,
        "gan.select",
        f"{gan.select!r} is not a selection rule",
        "use 'fd', 'label_fidelity' or 'combined'",
    )
    require(
        gan.select_fd_guard >= 1.0,
        "gan.select_fd_guard",
        f"{gan.select_fd_guard} < 1 would refuse the lowest FD itself",
        "use a factor >= 1, e.g. 1.5",
    )
    fd = gan.fd
    if fd.every_kimg <= 0:
        return
    require(
        fd.features in FD_FEATURES,
        "gan.fd.features",
        f"{fd.features!r} is unknown",
        f"use {FD_FEATURES}",
    )
    require(
        fd.reference_split in SPLITS,
        "gan.fd.reference_split",
        f"{fd.reference_split!r} is not a split",
        "use 'validation' (default) or 'train' (the study's choice)",
    )
    require(
        fd.num_images >= 2 and fd.batch_size > 0 and fd.batch_size % data == 0,
        "gan.fd.batch_size",
        f"{fd.num_images} images in batches of {fd.batch_size} on {data} devices",
        f"use num_images >= 2 and a batch that is a multiple of {data}",
    )
    if fd.features == "inception":
        require(
            bool(fd.inception_weights) and os.path.isfile(fd.inception_weights),
            "gan.fd.inception_weights",
            f"{fd.inception_weights!r} is not a file",
            "convert pytorch-fid's pt_inception-2015-12-05 weights once with "
            "scripts/convert_fid_inception.py and pass the .npz, or use "
            "gan.fd.features=classifier",
        )


def check_privacy(p: ml_collections.ConfigDict) -> None:
    """The memorization audit that gates the synthetic release."""
    require(
        0.0 < p.percentile < 50.0,
        "privacy.percentile",
        f"{p.percentile} is not a percentile in (0, 50)",
        "use 1.0 (the 1st percentile of held-out distances)",
    )
    require(
        0.0 < p.alpha < 1.0,
        "privacy.alpha",
        f"{p.alpha} is not a significance level in (0, 1)",
        "use e.g. 0.01",
    )
    require(
        0.5 <= p.floor_quantile <= 1.0 and p.floor_images >= 16,
        "privacy.floor_quantile",
        f"quantile {p.floor_quantile} of {p.floor_images} near copies cannot place the floor",
        "use floor_quantile 0.5 and floor_images 512",
    )
    require(
        p.replace_attempts >= 0,
        "privacy.replace_attempts",
        f"{p.replace_attempts} is negative",
        "use 0 (drop close images) or more (draw them again first)",
    )
    require(
        is_power_of_two(p.pixel_resolution),
        "privacy.pixel_resolution",
        f"{p.pixel_resolution} is not a power of two >= 4",
        "use 32 or 64",
    )


def check_interval_level(level: str) -> None:
    from synthjax.eval.utility import INTERVAL_LEVELS

    require(
        level in INTERVAL_LEVELS,
        "evaluate.interval_level",
        f"{level!r} is not a level",
        f"use one of {list(INTERVAL_LEVELS)} (patient: resample patients, the default)",
    )


def check_evaluate(ev: ml_collections.ConfigDict, resolution: int) -> None:
    from synthjax.eval.discrimination import resolutions_for

    check_interval_level(ev.interval_level)
    require(ev.prdc_k >= 1, "evaluate.prdc_k", f"{ev.prdc_k} < 1", "use 5 (the papers')")
    require(
        ev.fd_num_images >= 2 and (ev.max_images <= 0 or ev.fd_num_images <= ev.max_images),
        "evaluate.fd_num_images",
        f"{ev.fd_num_images} images per side for FD (evaluate.max_images {ev.max_images})",
        "use 2 or more and at most evaluate.max_images, e.g. 10000",
    )
    require(
        ev.kid_subset_size >= 2 and ev.kid_subsets >= 1,
        "evaluate.kid_subset_size",
        f"KID over {ev.kid_subsets} subsets of {ev.kid_subset_size} images",
        "use the references' kid_subset_size=1000, kid_subsets=100",
    )
    require(
        ev.inception_weights == "" or os.path.isfile(ev.inception_weights),
        "evaluate.inception_weights",
        f"{ev.inception_weights!r} is not a file",
        "convert pytorch-fid's weights once with scripts/convert_fid_inception.py and pass "
        "the .npz, or leave it empty (domain features only)",
    )
    require_parsed(
        "evaluate.c2st.resolutions",
        "use () or divisors of the resolution",
        resolutions_for,
        resolution,
        tuple(ev.c2st.resolutions),
    )
    require(
        ev.c2st.train_steps > 0 and ev.c2st.batch_size > 0,
        "evaluate.c2st.train_steps",
        "the discrimination test needs positive train_steps and batch_size",
        "e.g. train_steps=600, batch_size=64",
    )


def check_selection_inputs(
    config: ml_collections.ConfigDict, real_classifier_ready: bool, workdir: object
) -> None:
    """GAN model selection measures with the real-data classifier: the run must train it
    (`classifier_real` in `stages`) or find it finished (`real_classifier_ready`)."""
    fd = config.gan.fd
    require(
        "gan" not in config.stages
        or fd.every_kimg <= 0
        or (fd.features != "classifier" and config.gan.select == "fd")
        or "classifier_real" in config.stages
        or real_classifier_ready,
        "gan.fd.features",
        "GAN model selection measures Fréchet distances and label fidelity with the "
        f"real-data classifier, and classifier_real has not run in {workdir}",
        "add 'classifier_real' to `stages`, or set gan.fd.every_kimg=0 (no selection)",
    )
