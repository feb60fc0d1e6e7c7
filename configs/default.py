r"""The one place defaults live. Other configs import this and override.

Every field a stage reads is here, with the study's value where the study had one
(DuMont Schütte et al., npj Digit. Med. 2021). Run it (real CheXpert, study sizes at 32x32):

    python -m synthjax.main --config=configs/default.py --workdir=runs/default \
        --config.dataset.manual_dir=/data/chexpert

`get_config("smoke")` (`--config=configs/default.py:smoke`) shrinks everything so the whole
pipeline runs in about a minute on two CPU cores. The argument is read big_vision's way
(`parse_arg`): comma-separated variants, each a bare name or `key=value`; the configs built
on this one add theirs (`configs/quickstart.py:ct,smoke`) and refuse unknown ones.
"""

import ml_collections

from synthjax.core import config_files
from synthjax.data.registry import PHANTOM_DATASETS
from synthjax.stages import ORDER as STAGE_ORDER


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variants = parse_arg(arg)
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.stages = STAGE_ORDER

    # --- data: raw folder -> TFDS shards (one per resolution) -> grain pipeline ---------------
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "chexpert"  # chexpert | nih_cxr14 | rsna_ich | folder: reads `manual_dir`
    c.dataset.manual_dir = ""  # raw dataset folder ('' with phantom.enabled: workdir/phantom)
    c.dataset.data_dir = ""  # where prepared shards go ('' = workdir/data; share it in sweeps)
    c.dataset.resolution = 32
    c.dataset.base_resolution = 256  # images are resized to this, then 2x2 box-downsampled
    c.dataset.uncertain_policy = "u_ones"  # the study's: -1 -> 1
    c.dataset.drop_no_positive = True  # the study dropped images without a positive label
    c.dataset.num_classes = 0  # keep the N most frequent label combinations (0 = all)
    # Images per kept combination in each split (0 = all). The study's benchmarks fix all
    # three; a split with fewer images of a combination than asked is refused, not shrunk.
    c.dataset.samples_per_class = 0  # train
    c.dataset.validation_per_class = 0
    c.dataset.test_per_class = 0
    c.dataset.min_class_count = 0  # drop combinations rarer than this in train (0 = keep)
    c.dataset.hflip = False  # chest X-rays are not mirror-symmetric; the study flipped anyway
    c.dataset.prepare_workers = 0  # processes decoding source images (0 = every core)
    # Brain CT (rsna_ich): HU -> one 8-bit channel per display window (synthjax.data.dicom).
    c.dataset.ct = ml_collections.ConfigDict()
    c.dataset.ct.windows = "brain,subdural,bone"  # 'brain' alone is the study's one channel
    c.dataset.ct.context = 0  # neighbouring slices per side stacked as channels (0, 1 or 2)
    # A researcher's own data (folder): images (PNG/JPG/DICOM) + a CSV naming them.
    c.dataset.folder = ml_collections.ConfigDict()
    c.dataset.folder.labels_csv = "labels.csv"  # relative to manual_dir
    c.dataset.folder.image_column = "image"  # path relative to manual_dir
    c.dataset.folder.patient_column = "patient"  # the split is by patient
    c.dataset.folder.label_columns = ""  # comma-separated 0/1 columns ('' = all the others)
    c.dataset.folder.channels = 1  # 1 = grayscale, 3 = RGB
    c.dataset.folder.dicom_window = "file"  # file (the DICOM's own VOI window) | minmax
    # Image paths (`..`, absolute, symlinks) leading out of manual_dir are skipped and counted
    # as outside_manual_dir; True reads them (a folder whose CSV points at images elsewhere).
    c.dataset.folder.allow_outside_paths = False
    # The built-in phantom hospital (chest: CheXpert's layout; brain CT: RSNA's DICOMs).
    c.dataset.phantom = ml_collections.ConfigDict(
        dict(
            enabled=False,  # write a built-in CheXpert-layout phantom and use it
            # The phantom hospital's own seed: the data stay the same when the run's seed
            # changes, as a real dataset would.
            seed=0,
            # Where phantoms are written ('' = workdir/phantom). Given, each phantom goes into
            # a subfolder named after its settings, so runs of a sweep share the ones they
            # agree on.
            dir="",
            num_patients=2000,
            image_size=256,
            noise=1.0,
            # Calibrated so the quickstart's real-data classifier lands in the study's
            # real-data AUROC range (~0.78-0.93): at 2.0 TRTR reached 0.87 (top-10
            # combinations, 32x32).
            subtlety=2.0,
            anatomy_variation=1.0,
            min_slices=16,  # brain CT phantom (rsna_ich): slices per patient's series,
            max_slices=32,  # drawn uniformly in [min, max]
        )
    )

    # --- classifier (TRTR on real, TSTR on synthetic) -----------------------------------------
    c.classifier = ml_collections.ConfigDict()
    c.classifier.arch = "densenet121"  # densenet121 | densenet_narrow
    c.classifier.batch_size = 48
    c.classifier.learning_rate = 1e-4
    c.classifier.train_steps = 20_000  # upper bound; early stopping usually ends sooner
    c.classifier.eval_every = 105  # ~5,000 samples per "epoch" at batch 48, as in the study
    c.classifier.patience = 3  # evaluations without a better mean validation AUROC
    c.classifier.lr_decay_patience = 2  # evaluations without improvement before LR x0.1
    c.classifier.lr_decay_factor = 0.1
    c.classifier.pos_weight = True  # BCE positive weights n_neg / n_pos per label
    c.classifier.eval_batch_size = 256
    c.classifier.checkpoint_every = 500
    c.classifier.log_every = 50
    # What the network sees (synthjax/train/classifier_inputs.py). synthjax: the image at its
    # own resolution in [-1, 1], trained from scratch. study: the study's input, grayscale
    # tiled to 3 channels, resized bilinearly to input_resolution, ImageNet-normalised, for
    # a DenseNet-121 started from `weights` (without a file: random weights, logged loudly).
    c.classifier.protocol = "synthjax"
    c.classifier.input_resolution = 224  # study: the network's input side (the study's 224)
    # study: .npz of torchvision's densenet121 from scripts/convert_densenet121.py ('' = none)
    c.classifier.weights = ""
    c.classifier.augment = False  # mild translate/scale augmentation in training (either)

    # --- GAN ---------------------------------------------------------------------------------
    c.gan = ml_collections.ConfigDict()
    # cpd | prog (the study's two; prog's own sizes and schedule: gan.prog below) | dcgan (a
    # plain conv G with group norm and tanh, a strided-conv D: synthjax/models/dcgan.py;
    # the quickstart's, where it drew anatomy in 400 steps and cpD did not)
    c.gan.arch = "cpd"
    # study: the study's exact design (every reproduction config uses it) | synthjax: a
    # normalised label embedding + mapping network in G, a projection D with a multi-label
    # auxiliary classifier, logistic loss + R1 (synthjax/train/recipes.py; the README's
    # ablation table is why it is the default).
    c.gan.recipe = "synthjax"
    # The recipe's single choices, each overridable ('' = the recipe's):
    c.gan.loss = ""  # wgan_gp (study) | logistic_r1 (synthjax: non-saturating + lazy R1)
    c.gan.conditioning = ""  # G: concat (study) | mapping (synthjax)
    c.gan.d_conditioning = ""  # D: label_sum (study) | projection (synthjax)
    c.gan.aux = ""  # auxiliary classifier: none (study cpD) | softmax (study prog) | sigmoid
    c.gan.rgb_upsample = ""  # cpD skip path: nearest (study) | bilinear (synthjax)
    c.gan.aux_weight = 1.0  # its weight in D's and G's losses (the study's AC-GAN: 1)
    c.gan.aux_weight_g = -1.0  # its weight in G's loss alone (< 0: gan.aux_weight)
    # Mode seeking (Mao et al. 2019): G's loss + weight / (|G(z1,y) - G(z2,y)| / |z1 - z2|),
    # against the conditional mode collapse an auxiliary classifier invites.
    c.gan.mode_seeking = -1.0  # < 0: the recipe's (study 0, synthjax 1)
    c.gan.mapping_layers = 2  # conditioning=mapping: dense layers after the embedding
    c.gan.mapping_lr_mul = 0.01  # their learning-rate multiplier (StyleGAN2's)
    c.gan.train_kimg = 12_000.0  # length in thousands of real images (the study's cap at 32^2;
    # 14,000 at 64^2, 16,000 at 128^2)
    c.gan.train_steps = 0  # > 0: exactly this many steps instead (smoke tests, extensions)
    c.gan.adam_b1 = 0.0
    c.gan.adam_b2 = 0.99
    c.gan.adam_eps = 1e-8
    c.gan.latent_dim = 512
    c.gan.mbstd_group_size = 4
    c.gan.gp_weight = 10.0  # WGAN-GP lambda
    c.gan.drift_weight = 0.001  # epsilon * D(x)^2
    # logistic_r1: gamma/2 * |grad D(real)|^2 (< 0: the recipe's, study 0.01 as ADA's at
    # 32^2, synthjax 1.0)
    c.gan.r1_gamma = -1.0
    c.gan.r1_interval = 16  # logistic_r1: the penalty every N steps, weighted by N (lazy)
    # Mixed precision: layers at this resolution and above compute in bfloat16; parameters,
    # optimizer state and the coarse layers stay float32 (0 = everything float32).
    c.gan.bf16_resolution = 0
    c.gan.ema_decay = 0.999
    c.gan.ema_warmup = True  # decay = min(ema_decay, (1 + step) / (10 + step)): short runs
    c.gan.checkpoint_every = 1000
    c.gan.log_every = 50
    c.gan.sample_every = 2000  # conditional sample grid PNGs
    c.gan.sample_rows = 8  # label combinations in the grid (most frequent first)
    c.gan.sample_cols = 8
    # Each architecture's batch, learning rate and widths in its own section. cpD-GAN: the
    # study's sizes at 32^2 (channels fmap_base / 2^stage, at most fmap_max).
    c.gan.cpd = ml_collections.ConfigDict()
    c.gan.cpd.batch_size = 256
    c.gan.cpd.learning_rate = 0.005
    c.gan.cpd.fmap_base = 16384
    c.gan.cpd.fmap_max = 512
    # prog-GAN (Karras et al. 2018 with the study's conditioning): grows from start_resolution,
    # each new resolution faded in over fade_kimg and trained stable_kimg (the study: 1,400 at
    # 32^2, 1,000 at 64^2 and above); the last resolution trains until train_kimg.
    # dcgan: channels nf(res) = clip(fmap_base / res, 16, fmap_max), halved per doubling.
    c.gan.dcgan = ml_collections.ConfigDict()
    c.gan.dcgan.batch_size = 256
    c.gan.dcgan.learning_rate = 0.005
    c.gan.dcgan.fmap_base = 16384
    c.gan.dcgan.fmap_max = 512
    # G's normalisation: 'group' (one learned affine for all samples) or 'adaptive' (group
    # norm with a per-sample scale and shift from z and the labels).
    c.gan.dcgan.norm = "adaptive"
    c.gan.prog = ml_collections.ConfigDict()
    c.gan.prog.start_resolution = 8
    c.gan.prog.batch_sizes = "8:256,16:128,32:64,64:32,128:16,256:16,512:8,1024:4"
    c.gan.prog.fade_kimg = 1400.0
    c.gan.prog.stable_kimg = 1400.0
    c.gan.prog.learning_rate = 0.001
    c.gan.prog.fmap_base = 8192
    c.gan.prog.fmap_max = 512
    c.gan.prog.reset_optimizer = True  # fresh Adam moments when layers are added / settle
    # Adaptive discriminator augmentation (Karras et al. 2020), either architecture.
    c.gan.ada = ml_collections.ConfigDict()
    c.gan.ada.enabled = False  # the study had none
    c.gan.ada.augmentations = "translate,rotate,scale,brightness,contrast,cutout"  # + xflip
    c.gan.ada.target = 0.6  # target E[sign(D(real) - center)]
    c.gan.ada.start_p = 0.0  # the strength at step 0 (ADA's: 0; short runs start higher)
    # Where D's score means "undecided": "zero" (ADA's, for a logistic D), "midpoint" of the
    # mean real and fake scores (for a WGAN critic, whose offset is arbitrary), or "auto".
    c.gan.ada.center = "auto"
    c.gan.ada.interval = 4  # steps between adjustments of p
    c.gan.ada.speed_kimg = 500.0  # p can go from 0 to 1 in this many kimg
    # Model selection and early stopping by Fréchet distance (the study: FID every 4 ticks
    # from 7,000 kimg, 9,000 at 128^2, patience 2) of the EMA generator against real images,
    # in the real-trained classifier's pooled features ('classifier', the domain features)
    # or Inception-v3 pool3 features from a weights file you provide ('inception').
    c.gan.fd = ml_collections.ConfigDict()
    c.gan.fd.every_kimg = 400.0  # 0 disables (synthesize then uses the last EMA generator)
    c.gan.fd.start_kimg = 7000.0  # evaluations before this are logged, not selected
    c.gan.fd.patience = 2  # stop after this many eligible evaluations without a better FD
    c.gan.fd.num_images = 10_000  # generated images per evaluation (and real ones at most)
    c.gan.fd.reference_split = "validation"  # real images FD is measured against
    c.gan.fd.features = "classifier"  # classifier | inception
    c.gan.fd.inception_weights = ""  # .npz from scripts/convert_fid_inception.py
    c.gan.fd.batch_size = 256
    # What "best" means at those evaluations: fd (the study's) | label_fidelity (the
    # real-trained classifier's AUROC on generated images against their labels) | combined
    # (the best label fidelity among evaluations with FD <= select_fd_guard x the lowest FD).
    c.gan.select = "combined"
    c.gan.select_fd_guard = 1.5

    # --- synthesize / evaluate -----------------------------------------------------------------
    c.synthesize = ml_collections.ConfigDict()
    c.synthesize.batch_size = 256
    c.synthesize.shard_size = 4096  # images per array_record shard (a resumable unit)
    # The memorization audit in synthesize (synthjax/eval/privacy.py), on every synthetic
    # image. It fails when any synthetic image is below the copy floor (where near copies of
    # training images lie) or when synthetic images are "close" (nearer a training image than
    # all but `percentile`% of real held-out images) significantly more often than held-out
    # ones are; a failed audit makes DATASET_CARD.json say releasable: false.
    c.privacy = ml_collections.ConfigDict()
    c.privacy.percentile = 1.0
    c.privacy.alpha = 0.001  # family-wise over every test in every space (Bonferroni)
    c.privacy.floor_quantile = 0.5  # of near-copy distances (privacy.near_copies)
    c.privacy.floor_images = 512  # training images whose near copies calibrate the floor
    c.privacy.replace_attempts = 3  # close images of a passing set: redraws before dropping
    c.privacy.release_override = ""  # a reason to release anyway; recorded in the card
    c.privacy.pixel_resolution = 64  # images are box-averaged to this before correlating
    c.privacy.max_heldout = 10000  # real held-out reference images (0 = all)
    c.privacy.grid_pairs = 16  # rows of the closest-pairs grids
    c.evaluate = ml_collections.ConfigDict()
    c.evaluate.bootstrap_resamples = 1000
    c.evaluate.confidence = 0.95
    # What the intervals and DeLong's test resample: patient (all test images of a drawn
    # patient; a CT series' slices are not independent) | image (the study's). The
    # image-level ones are recorded beside the patient-level ones either way.
    c.evaluate.interval_level = "patient"
    c.evaluate.min_positives = 10  # labels with fewer test positives stay out of the mean
    # Per label combination (utility and fidelity): combinations with this many test images.
    c.evaluate.min_combination_images = 20
    c.evaluate.prdc_k = 5  # neighbourhood of precision / recall / density / coverage
    c.evaluate.max_images = 10000  # real and synthetic test images compared (seeded choice)
    # FD grows as the sample shrinks: the overall FDs use exactly this many images per side
    # (a seeded choice; fewer, said so in report.json, when a split has fewer), so runs
    # with different test splits compare. At most max_images.
    c.evaluate.fd_num_images = 10000
    # KID: the unbiased MMD^2 averaged over kid_subsets subsets of kid_subset_size images per
    # side (the references' 1000 x 100; smaller sets use all their images).
    c.evaluate.kid_subset_size = 1000
    c.evaluate.kid_subsets = 100
    # FD and PRDC in Inception-v3 features too, from this file (scripts/convert_fid_inception.py).
    c.evaluate.inception_weights = ""
    # The discrimination test: a CNN told to separate real held-out from synthetic images.
    c.evaluate.c2st = ml_collections.ConfigDict()
    c.evaluate.c2st.resolutions = ()  # () = every power of two from 32 up to the resolution
    c.evaluate.c2st.train_steps = 600
    c.evaluate.c2st.batch_size = 64
    c.evaluate.c2st.learning_rate = 1e-3
    c.evaluate.c2st.max_images = 5000  # per side, real and synthetic

    # --- devices, numerics ---------------------------------------------------------------------
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # devices on the data axis (-1 = all)
    # auto (hybrid on CPU, native on GPU/TPU) | native | im2col | hybrid (native, with
    # strided convolutions through im2col): synthjax/models/layers.py says why.
    c.conv_lowering = "auto"
    # Compiled programs cached in <workdir>/compilation_cache: a resumed run (preemption,
    # crash) skips recompiling. '' disables it; any other value is the cache directory.
    c.compilation_cache = "workdir"

    if variants.smoke:
        shrink_to_smoke(c)
    return c


def parse_arg(arg: str | None, **variants: bool) -> ml_collections.ConfigDict:
    """The config argument (`smoke` here; config files built on this one add `variants`)."""
    return config_files.parse_arg(arg, smoke=False, **variants)


def cpu_classifier(c: ml_collections.ConfigDict, train_steps: int) -> None:
    """The narrow DenseNet at a CPU's pace (~95 img/s on 2 cores): batch 32 at 1e-3,
    validated every 50 steps, stopped after 4 validations without improvement."""
    c.classifier.arch = "densenet_narrow"
    c.classifier.batch_size = 32
    c.classifier.learning_rate = 1e-3
    c.classifier.train_steps = train_steps
    c.classifier.eval_every = 50
    c.classifier.patience = 4
    c.classifier.checkpoint_every = 100


def cpu_gan(
    c: ml_collections.ConfigDict, *, batch_size: int, fmap_base: int, phase_kimg: float
) -> None:
    """Every generator small, for a CPU: latent 128, `fmap_base` for cpd, prog and dcgan,
    learning rate 2e-3 (dcgan 1e-3), prog at one batch size from 8x8 to the resolution
    with phases of `phase_kimg`, and FD measured once a phase, never stopping early (the
    runs are short already). Set dataset.resolution first."""
    c.gan.cpd.update(batch_size=batch_size, learning_rate=0.002, fmap_base=fmap_base)
    c.gan.dcgan.update(batch_size=batch_size, fmap_base=fmap_base)
    c.gan.latent_dim = 128
    # 1e-3, not 2e-3: over 4 quickstart seeds TSTR was the same within its spread (0.762 ±
    # 0.032 against 0.782 ± 0.047) and label fidelity higher and steadier (0.900 ± 0.004
    # against 0.869 ± 0.022); at 2e-3 one seed's discriminator blew up and G collapsed for
    # 150 steps.
    c.gan.dcgan.learning_rate = 0.001
    c.gan.prog.fmap_base = fmap_base
    c.gan.prog.learning_rate = 0.002
    resolutions = [8 << i for i in range((c.dataset.resolution // 8).bit_length())]
    c.gan.prog.batch_sizes = ",".join(f"{r}:{batch_size}" for r in resolutions)
    c.gan.prog.fade_kimg = c.gan.prog.stable_kimg = phase_kimg
    c.gan.fd.every_kimg = phase_kimg
    c.gan.fd.patience = 0


def shrink_to_smoke(c: ml_collections.ConfigDict) -> None:
    """Everything tiny: the whole pipeline in about a minute on 2 CPU cores."""
    c.dataset.update(resolution=16, base_resolution=64, num_classes=4)
    # The phantom stands in for data that needs a download; other datasets keep manual_dir.
    enabled = c.dataset.name in PHANTOM_DATASETS
    c.dataset.phantom.update(enabled=enabled, num_patients=400, image_size=64)
    if c.dataset.name == "rsna_ich":  # ~8 slices per patient: ~800 slices, and ~10 test
        # patients, so the test split has bleeds
        c.dataset.phantom.update(num_patients=100, min_slices=6, max_slices=10)
    c.classifier.update(arch="densenet_narrow", batch_size=16, learning_rate=1e-3)
    c.classifier.update(train_steps=30, eval_every=10, checkpoint_every=5, log_every=5)
    c.classifier.eval_batch_size = 64
    c.gan.update(train_steps=30, latent_dim=32, checkpoint_every=5, log_every=5)
    c.gan.update(sample_every=15, sample_rows=4, sample_cols=4)
    # DCGAN shrinks its rate with cpD's unless the config chose its own (the quickstart's).
    dcgan_rate = 0.002 if c.gan.dcgan.learning_rate == c.gan.cpd.learning_rate else None
    c.gan.cpd.update(batch_size=16, learning_rate=0.002, fmap_base=256, fmap_max=32)
    c.gan.dcgan.update(batch_size=16, fmap_base=256, fmap_max=64)
    c.gan.dcgan.learning_rate = dcgan_rate or c.gan.dcgan.learning_rate
    c.gan.prog.update(fmap_base=256, fmap_max=32, learning_rate=0.002)
    c.gan.prog.batch_sizes = "8:16,16:16,32:16,64:16"
    c.gan.prog.update(fade_kimg=0.16, stable_kimg=0.16)  # 10 steps of 16
    c.gan.fd.update(every_kimg=0.16, start_kimg=0.16, num_images=64, batch_size=64)
    c.synthesize.update(batch_size=64, shard_size=128)
    c.evaluate.update(bootstrap_resamples=100, min_positives=1, min_combination_images=4)
    c.evaluate.c2st.update(train_steps=40, batch_size=32)
