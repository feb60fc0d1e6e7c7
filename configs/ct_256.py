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

from configs import cxr_256, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variants = default.parse_arg(arg)
    c = cxr_256.get_config()  # the study's settings at 256^2
    c.dataset.name = "rsna_ich"
    c.dataset.drop_no_positive = False  # no_finding is one of the study's six classes
    c.dataset.phantom.image_size = 256
    if variants.smoke:
        default.shrink_to_smoke(c)
    return c
