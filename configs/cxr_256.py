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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = default.get_config()
    c.dataset.resolution = 256
    c.dataset.base_resolution = 256
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
