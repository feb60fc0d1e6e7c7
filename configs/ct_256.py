r"""Brain CT (RSNA Intracranial Hemorrhage Detection) at 256x256 with the study's cpD-GAN sizes.

Download the challenge data (stage_2_train.csv + stage_2_train/ DICOMs) and point
`manual_dir` at the folder holding them:

  python -m synthjax.main --config=configs/ct_256.py --workdir=runs/ct_256 \
      --config.dataset.manual_dir=/data/rsna-intracranial-hemorrhage-detection

Slices are read from DICOM, converted to Hounsfield units and windowed into three channels
(brain 40/80, subdural 80/200, bone 600/2800). The study used one brain-window channel:
`--config.dataset.ct.windows=brain` reproduces it. `--config.dataset.ct.context=1` stacks the
slices above and below as extra channels. Labels are the study's six classes (the five
subtypes and no_finding); every slice is kept, since no_finding is a class.

`configs/ct_256.py:smoke` runs the same pipeline on the built-in CT phantom (DICOMs in the
RSNA layout), shrunk to about a minute.
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = default.get_config()
    c.dataset.name = "rsna_ich"
    c.dataset.resolution = 256
    c.dataset.base_resolution = 256
    c.dataset.drop_no_positive = False  # no_finding is one of the study's six classes
    c.dataset.phantom.image_size = 256
    c.gan.batch_size = 160
    c.gan.train_kimg = 16_000.0  # 100,000 steps at batch 160
    c.gan.prog.fade_kimg = 1000.0  # the study's phase length at 64^2 and above
    c.gan.prog.stable_kimg = 1000.0
    c.gan.fd.start_kimg = 9000.0
    c.gan.latent_dim = 512
    c.gan.fmap_base = 16384
    c.gan.fmap_max = 512
    c.gan.sample_every = 5000
    c.classifier.arch = "densenet121"
    if arg:
        default.apply_variant(c, arg)
    return c
