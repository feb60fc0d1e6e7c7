r"""The study's samples-per-class benchmark at 32x32: how much real data the GAN needs.

Chest (CheXpert): the three combinations with more than 7,400 images, 5950 ... 200 training
images each, 750 validation and 750 test images each. Brain CT (RSNA, `:ct`): the six most
frequent combinations, 5400 ... 100 training images, 500 and 500. Each crossed with both
generators and three seeds; smaller training sets are inside larger ones (same seed).

  python -m launch.sweep --config=configs/sweeps/samples.py --workdir=runs/samples \
      -- --config.dataset.manual_dir=/data/chexpert

With CheXpert's patient-level 80/10/10 split the third combination has about 750
validation images: a split that falls short is refused with the number it has (lower
`dataset.validation_per_class` / `test_per_class` to run anyway, and say so).
"""

import ml_collections

from configs.sweeps import study


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return study.benchmark_config(arg, study.SAMPLES)


def get_sweep(arg: str | None = None) -> list[dict]:
    sizes = study.SAMPLES[study.modality(arg)]["train_per_class"]
    return study.crossed([{"dataset.samples_per_class": per_class} for per_class in sizes])
