r"""The study's number-of-classes benchmark, reduced to run on 2 CPU cores in under an hour.

The chest phantom (a fake hospital in CheXpert's layout, label vectors drawn from CheXpert's
real combination frequencies) at 32x32, the 2, 6 and 10 most frequent label combinations
(three of the study's rows), each with both generators and seeds 0, 1 and 2 (`SEEDS`). As
in the study, fewer classes get more training images per class (the rarest kept
combination's share), and validation and test images per class are fixed across the
settings. Networks are the quickstart's narrow ones and training is about 1/400 of the
study's length, so the numbers say whether the trends appear, not what CheXpert would score.

  python -m launch.sweep --config=configs/sweeps/reproduction.py --workdir=runs/reproduction
  python -m synthjax.analysis runs/reproduction --x dataset.num_classes \
      --reference cxr_classes --out runs/reproduction/auroc.png

Each seed's pass (six GANs, three real and six synthetic classifiers) takes under an hour on
2 cores; `--seeds=0` runs one pass, whose settings can then be compared on the test sample's
interval only. The cpd and prog runs of one class setting and seed share the prepared data
and the real-data classifier.

`configs/sweeps/reproduction.py:dcgan` runs the same settings with the quickstart's
generator under the synthjax recipe (dcgan, `gan.recipe=synthjax`, `gan.select=combined`),
into the same `--workdir`: its runs start from the cpd runs' real classifiers when those
have finished, and `synthjax.analysis` then shows dcgan as a third curve.
"""

import ml_collections

from configs import quickstart

# Training images per combination for each number of combinations (the rarest kept
# combination's count in this phantom's training split, rounded down).
TRAIN_PER_CLASS = {2: 1100, 6: 450, 10: 360}
VALIDATION_PER_CLASS = 40
TEST_PER_CLASS = 40
# Each setting's runs: seeds differ in the training subset, the networks' initialisation and
# batch order, and the test images drawn (`synthjax.analysis.aggregate_seeds` pools them).
SEEDS = (0, 1, 2)


def _variants(arg: str | None) -> tuple[bool, str]:
    """(the dcgan variant, the rest of `arg` for the quickstart: smoke, ct)."""
    items = [item.strip() for item in (arg or "").split(",") if item.strip()]
    return "dcgan" in items, ",".join(item for item in items if item != "dcgan")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    dcgan, rest = _variants(arg)
    c = quickstart.get_config(rest or None)
    c.dataset.phantom.num_patients = 20_000
    c.dataset.validation_per_class = VALIDATION_PER_CLASS
    c.dataset.test_per_class = TEST_PER_CLASS
    # Per seed: six GANs, three real and six synthetic classifiers in under an hour on 2 cores.
    c.classifier.train_steps = 300
    c.classifier.eval_every = 50
    c.gan.train_kimg = 19.2  # 300 steps of 64
    c.gan.fd.start_kimg = 9.6
    c.gan.recipe = "study"  # the study's design, as measured below; cross with synthjax
    c.gan.select = "fd"  # by --config.gan.recipe=synthjax --config.gan.select=combined
    if dcgan:  # the quickstart's generator and recipe
        c.gan.arch, c.gan.recipe, c.gan.select = "dcgan", "synthjax", "combined"
    return c


def get_sweep(arg: str | None = None) -> list[dict]:
    archs = ("dcgan",) if _variants(arg)[0] else ("cpd", "prog")
    return [
        {"dataset.num_classes": n, "dataset.samples_per_class": per_class, "gan.arch": arch}
        for n, per_class in TRAIN_PER_CLASS.items()
        for arch in archs
    ]
