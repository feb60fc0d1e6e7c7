r"""CheXpert frontal radiographs at 256x256 with the study's cpD-GAN sizes.

fmap_base 16384, fmap_max 512, latent 512; batch 160 as the study used at 256^2 (8 GPUs).
Download CheXpert-v1.0-small (Stanford AIMI) and point `manual_dir` at the folder holding
`CheXpert-v1.0-small/`:

  python -m synthjax.main --config=configs/cxr_256.py --workdir=runs/cxr_256 \
      --config.dataset.manual_dir=/data/chexpert

CheXpert-v1.0-small stores images at about 320 px, so 256 is its finest pyramid level.
"""

import ml_collections

from configs import default
from configs.sweeps import study


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variants = default.parse_arg(arg)
    c = default.get_config()
    # The study at 256^2: 16,000 kimg (100,000 steps at batch 160), FD selection from 9,000
    # kimg, prog-GAN phases of 1,000 kimg; the network sizes are default.py's.
    study.use_resolution(c, 256)
    c.gan.sample_every = 5000
    if variants.smoke:
        default.shrink_to_smoke(c)
    return c
