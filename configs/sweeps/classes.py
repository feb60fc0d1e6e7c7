r"""The study's number-of-classes benchmark: the N most frequent label combinations at 32x32.

Chest (CheXpert): N = 20/15/10/6/4/2 with 1450/1600/2000/2300/3900/6300 training images per
combination, 190 validation and 170 test images each. Brain CT (RSNA, `:ct`): N =
10/8/6/4/2 with 2500/3120/4170/6250/12500, 300 and 200. Each crossed with cpD-GAN and
prog-GAN and three seeds:

  python -m launch.sweep --config=configs/sweeps/classes.py --workdir=runs/classes \
      -- --config.dataset.manual_dir=/data/chexpert
  python -m launch.sweep --config=configs/sweeps/classes.py:ct --workdir=runs/classes_ct \
      -- --config.dataset.manual_dir=/data/rsna-intracranial-hemorrhage-detection

Runs that differ only in the generator share the prepared data and the real-data
classifier (`launch.sweep`). Analyse with `synthjax.analysis.plot_auroc_against(runs,
"dataset.num_classes")`.
"""

import ml_collections

from configs.sweeps import study


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return study.benchmark_config(arg, study.CLASSES)


def get_sweep(arg: str | None = None) -> list[dict]:
    sizes = study.CLASSES[study.modality(arg)]["train_per_class"]
    return study.crossed(
        [
            {"dataset.num_classes": n, "dataset.samples_per_class": per_class}
            for n, per_class in sizes.items()
        ]
    )
