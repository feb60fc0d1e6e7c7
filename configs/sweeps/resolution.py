r"""The study's resolution benchmark: 32, 64, 128 (first version), 256 and 512 (revision).

Each resolution with the study's training length, FD early-stopping start, prog-GAN phase
length and cpD batch size (`study.resolution_settings`), on the classes benchmark's 10
chest (6 brain, `:ct`) combinations and their per-class sizes, crossed with both generators
and three seeds. The 512x512 runs need CheXpert's full-size images (CheXpert-v1.0-small
stops at about 320 px) and an accelerator with room for batch 64.

  python -m launch.sweep --config=configs/sweeps/resolution.py --workdir=gs://b/resolution \
      --via=tpu_vm -- --name=res --zone=us-central2-b --accelerator-type=v4-32 --spot \
      --override=dataset.manual_dir=gs://b/chexpert
"""

import ml_collections

from configs.sweeps import classes, study


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = classes.get_config(arg)
    n = study.RESOLUTION_CLASSES[study.modality(arg)]
    c.dataset.num_classes = n
    c.dataset.samples_per_class = study.CLASSES[study.modality(arg)]["train_per_class"][n]
    return c


def get_sweep(arg: str | None = None) -> list[dict]:
    del arg  # the same resolutions for both modalities
    return study.crossed(
        [{"name": f"resolution-{r}", **study.resolution_settings(r)} for r in study.RESOLUTIONS]
    )
