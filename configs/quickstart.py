r"""Quickstart: the whole study on a built-in chest-radiograph phantom at 32x32, on a CPU.

The phantom writes a CheXpert-layout folder (CSV + JPEGs) that the real CheXpert builder
then reads, so this exercises the same ingestion path as real data. A small dcgan under the
synthjax recipe and a narrow classifier; about 10 minutes on 2 CPU cores:

  python -m synthjax.main --config=configs/quickstart.py --workdir=runs/quickstart

`configs/quickstart.py:smoke` runs the same pipeline shrunk to about a minute.

`configs/quickstart.py:ct` does the same on the built-in brain-CT phantom instead: a fake
hospital of DICOM slices in the RSNA Intracranial Hemorrhage layout, read through HU and
three display windows (brain, subdural, bone) into 3-channel 32x32 images with the study's
six classes. `:ct,smoke` shrinks it.
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variants = default.parse_arg(arg, ct=False)
    c = default.get_config()
    c.dataset.phantom.enabled = True
    c.dataset.phantom.num_patients = 4000
    c.dataset.phantom.image_size = 128
    c.dataset.base_resolution = 128
    c.dataset.resolution = 32
    c.dataset.num_classes = 10

    # Sized for about 10 minutes on 2 CPU cores, where the narrow DenseNet runs at ~95
    # img/s: a few epochs for the classifiers, ~26 kimg for the GAN (the study trained
    # 12,000 kimg). The study's own numbers need its training lengths (configs/default.py,
    # a GPU); `configs/sweeps/reproduction.py` runs its design at this size.
    default.cpu_classifier(c, train_steps=400)

    # dcgan: at this budget cpD drew noise over a chest outline and taught nothing (TSTR at
    # chance); dcgan draws the anatomy (the README's ablation). cpd and prog stay one
    # override away (--config.gan.arch=cpd), with the sizes below: 128 dcgan channels at 4x4
    # down to 16 at 32x32; prog grown to 32x32 at 12.8 kimg, then 12.8 kimg at full weight.
    c.gan.arch = "dcgan"
    default.cpu_gan(c, batch_size=64, fmap_base=512, phase_kimg=3.2)
    c.gan.train_kimg = 25.6  # 400 steps of 64
    c.gan.cpd.fmap_max = c.gan.prog.fmap_max = 32
    c.gan.fd.start_kimg = 12.8
    c.gan.fd.num_images = 500
    c.gan.checkpoint_every = 100
    c.gan.sample_every = 150
    c.gan.log_every = 10
    c.synthesize.shard_size = 1024
    # FD at a size every quickstart split has (test 178, validation 164 images), so its
    # FDs compare across seeds and variants.
    c.evaluate.fd_num_images = 150
    if variants.ct:
        use_ct_phantom(c)
    if variants.smoke:
        default.shrink_to_smoke(c)
    return c


def use_ct_phantom(c: ml_collections.ConfigDict) -> None:
    """The brain-CT phantom: 2,000 patients x 4-6 slices (~10,000 slices) at 128 px.

    Calibrated as the chest phantom was, by the real-data classifier (the study's top 6
    combinations, 32x32): bleeds cluster by patient, so the test split needs many patients
    for more than three classes to have 10 positives (300 patients x 16-32 slices: 3
    classes; 1,000 x 6-10: 3; 2,000 x 4-6: 5), and subtlety sets TRTR (1,000 x 6-10:
    0.947 at 2, 0.900 at 4, 0.866 at 8; 2,000 x 4-6 at 4: 0.908, in the study's brain
    range of ~0.85-0.93).
    """
    c.dataset.name = "rsna_ich"
    c.dataset.drop_no_positive = False  # no_finding is one of the study's six classes
    c.dataset.phantom.num_patients = 2000
    c.dataset.phantom.min_slices = 4
    c.dataset.phantom.max_slices = 6
    c.dataset.phantom.subtlety = 4.0
    c.dataset.num_classes = 6
    # Mode seeking back on: without it dcgan collapsed here (each label combination one
    # image; label fidelity 0.007, TSTR 0.507); with it, label fidelity 0.642 and TSTR 0.683
    # (seed 0, one run each, on the first dcgan and the earlier 300-patient phantom). On
    # this phantom the quickstart's generator is still at chance (label fidelity 0.52).
    c.gan.mode_seeking = 1.0


def get_sweep(arg: str | None = None) -> list[dict]:
    """Samples per class x GAN: the study's question in small (`python -m launch.sweep`).

    Each dict is one run's overrides of `get_config(arg)`; its workdir is named after them.
    The quickstart's rarest kept combination has 74 training images, so 70 is the most
    every combination can give (configs/sweeps/ holds the study's own sweeps).
    """
    del arg  # the same sweep for every variant
    return [
        {"dataset.samples_per_class": spc, "gan.arch": arch}
        for spc in (35, 70)
        for arch in ("cpd", "prog")
    ]
