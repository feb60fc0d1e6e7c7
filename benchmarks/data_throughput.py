"""Benchmark: can the input pipeline feed the GAN training step, resolution by resolution?

Where it sits: the `gan` stage reads array_record shards through `synthjax.data.loader`,
batches them with `synthjax.data.input_pipeline.train_iterator` (grain, the training's default
threads and prefetch) and moves each batch onto the mesh with `synthjax.core.parallel.to_global`
before `synthjax.train.gan.train_step` consumes it. This script times both ends of that
hand-off separately, on this machine, for each resolution:

  loader   images/s from shards to device-ready global arrays: a temporary dataset of random
           smooth images is written with the project's shard writer (`write s`, stored
           `KB/img`), then batches are drawn for `--seconds` after a warm-up, each one blocked
           on until it is on the devices.
  gan      images/s the cpD-GAN step consumes (one D and one G update, EMA), built as the
           `gan` stage builds it with the model sizes of `--gan-config`; compile time is
           reported apart, then batch * steps / seconds over the timed steps.
  dicom    slices/s the RSNA builder prepares from DICOM (read, HU, three windows, resize to
           the base resolution, pyramid, shards) on every core, from a CT phantom of
           `--dicom-slices` slices at `--dicom-size` px written once for all resolutions.
  headroom loader img/s / GAN img/s: how many times faster the input is than its consumer.
           Below 1 training is input-bound (the step waits for data); above 1 it is
           compute-bound. On a CPU both share the same cores during training, so a headroom
           of a few x still takes cores from the step there; on an accelerator it does not.

    python benchmarks/data_throughput.py                            # 32..256, quickstart GAN
    python benchmarks/data_throughput.py --resolutions 64 --skip-gan
    python benchmarks/data_throughput.py --resolutions 256 --gan-config configs/cxr_256.py \
        --gan-steps 2

Reading the table: `img/s` columns are wall-clock, so other jobs on the machine lower them;
`img/cpu-s` divides by this process's CPU time (all its threads) instead, which moves much
less under others' load and says what each image costs in CPU. The shards are read from the
page cache (they were just written), so the loader figure is decoding and batching, not
disk. Rerun before trusting a difference of less than ~20%.

Each section is a function `(settings, resolution, scratch_dir) -> {column: value}` listed in
`SECTIONS`; a new measurement (for example preparing shards from DICOM) is one more function
and one more entry there.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from synthjax import schema
from synthjax.core import compiler, parallel
from synthjax.data import input_pipeline as pipeline
from synthjax.data import loader, shards
from synthjax.models.layers import resolve_conv_lowering
from synthjax.train import gan

DATASET_NAME = "benchmark"
IMAGES_PER_SHARD = 1024
REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADER_WARMUP_BATCHES = 3

# Column titles the headroom and verdict are computed from.
LOADER_RATE = "loader img/s"
GAN_RATE = "GAN img/s"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The command line plus the config the GAN sizes (and `dataset.hflip`) come from."""

    images: int
    batch: int
    channels: int
    num_labels: int
    seconds: float
    gan_steps: int | None
    config_path: str
    config: ml_collections.ConfigDict
    dicom_slices: int = 480
    dicom_size: int = 512
    scratch_root: epath.Path | None = None  # lives for the whole run (the CT phantom)


Section = Callable[[Settings, int, epath.Path], dict[str, float]]


# --- loader -------------------------------------------------------------------------------


def smooth_noise_images(
    rng: np.random.Generator, n: int, resolution: int, channels: int
) -> np.ndarray:
    """uint8[n, R, R, C]: coarse random blobs plus fine grain, spanning most of 0..255.

    Pixel values matter for the size of a stored record, so they are spread like an
    image's rather than constant.
    """
    cell = max(1, resolution // 8)
    coarse = rng.random((n, -(-resolution // cell), -(-resolution // cell), channels))
    blobs = coarse.repeat(cell, axis=1).repeat(cell, axis=2)[:, :resolution, :resolution]
    for axis in (1, 2):  # soften the block edges
        blobs = (np.roll(blobs, 1, axis) + blobs + np.roll(blobs, -1, axis)) / 3
    grain = rng.normal(0.0, 0.05, blobs.shape)
    return np.clip((blobs + grain) * 255, 0, 255).astype(np.uint8)


def write_random_dataset(settings: Settings, resolution: int, dataset_dir: epath.Path) -> None:
    """A `train` split of `settings.images` records, written as `prepare` would leave it."""
    rng = np.random.default_rng(resolution)
    shape = (resolution, resolution, settings.channels)
    features = shards.image_features(shape, settings.num_labels)
    lengths = []
    num_shards = -(-settings.images // IMAGES_PER_SHARD)
    for index in range(num_shards):
        lo = index * IMAGES_PER_SHARD
        n = min(settings.images, lo + IMAGES_PER_SHARD) - lo
        images = smooth_noise_images(rng, n, resolution, settings.channels)
        labels = (rng.random((n, settings.num_labels)) < 0.3).astype(np.float32)
        records = (
            {"image": images[i], "labels": labels[i], "id": f"{DATASET_NAME}-{lo + i:07d}"}
            for i in range(n)
        )
        path = shards.shard_path(dataset_dir, DATASET_NAME, "train", index, num_shards)
        lengths.append(shards.write_shard(path, features, records))
    shards.write_metadata(
        dataset_dir,
        name=DATASET_NAME,
        features=features,
        shard_lengths={"train": lengths},
        label_names=[f"label_{k}" for k in range(settings.num_labels)],
        description="Random smooth images for benchmarks/data_throughput.py.",
    )


def _shard_bytes(dataset_dir: epath.Path) -> int:
    return sum(p.stat().length for p in dataset_dir.glob(f"{DATASET_NAME}-train.*"))


def global_batches(
    source: loader.ImageSource, settings: Settings, mesh: jax.sharding.Mesh
) -> Iterator[dict[str, jax.Array]]:
    """The training's batches, as `train_loop` feeds them to the step."""
    dataset = pipeline.train_dataset(
        source,
        np.arange(len(source)),
        global_batch=settings.batch,
        seed=settings.config.seed,
        hflip=settings.config.dataset.hflip,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    for batch in pipeline.train_iterator(dataset):  # the training's default threads
        yield parallel.to_global(batch, mesh)


def measure_loader(settings: Settings, resolution: int, scratch: epath.Path) -> dict[str, float]:
    """Writes the dataset, then times shards -> global arrays for `settings.seconds`."""
    dataset_dir = scratch / "shards"
    dataset_dir.mkdir()
    t0 = time.perf_counter()
    write_random_dataset(settings, resolution, dataset_dir)
    write_seconds = time.perf_counter() - t0
    mesh = parallel.make_mesh()
    schema.check_batch("--batch", settings.batch, mesh.shape[parallel.DATA_AXIS])
    batches = global_batches(loader.load_source(dataset_dir, "train"), settings, mesh)
    for _ in range(LOADER_WARMUP_BATCHES):  # threads start, prefetch buffer fills
        jax.block_until_ready(next(batches))
    count, t0, cpu0 = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - t0) < settings.seconds:
        jax.block_until_ready(next(batches))
        count += 1
    cpu = time.process_time() - cpu0
    batches.close()  # stops the prefetch threads before the next section runs
    return {
        "write s": write_seconds,
        "KB/img": _shard_bytes(dataset_dir) / settings.images / 1024,
        LOADER_RATE: count * settings.batch / elapsed,
        "loader img/cpu-s": count * settings.batch / cpu,
    }


# --- GAN step -----------------------------------------------------------------------------


def gan_step_inputs(
    settings: Settings, resolution: int, mesh: jax.sharding.Mesh
) -> tuple[Callable[..., Any], gan.GanState, dict[str, jax.Array], jax.Array]:
    """(jitted step, fresh state, one global batch, label table), as the `gan` stage has them."""
    cfg = settings.config
    shape = (resolution, resolution, settings.channels)
    setup = gan.gan_setup(cfg, num_labels=settings.num_labels, image_shape=shape)
    replicated = parallel.replicated(mesh)
    state = compiler.jit(setup.init, out_shardings=replicated)()
    phase = setup.schedule.final
    step = compiler.jit(
        gan.make_train_step(cfg.gan, setup.models, setup.optimizer, phase), donate_argnums=0
    )
    rng = np.random.default_rng(resolution)
    batch = parallel.to_global(
        {
            "image": smooth_noise_images(rng, settings.batch, resolution, settings.channels),
            "labels": (rng.random((settings.batch, settings.num_labels)) < 0.3).astype(np.float32),
        },
        mesh,
    )
    table = (rng.random((1024, settings.num_labels)) < 0.3).astype(np.float32)
    return step, state, batch, jax.device_put(table, replicated)


def _enough_gan_steps(settings: Settings, steps: int, elapsed: float) -> bool:
    if settings.gan_steps:
        return steps >= settings.gan_steps
    return steps >= 2 and elapsed >= settings.seconds


def measure_gan_step(settings: Settings, resolution: int, scratch: epath.Path) -> dict[str, float]:
    """Compiles the step, runs one warm-up step, then times `--gan-steps` steps (or as many
    as fit in `--seconds`, at least 2)."""
    del scratch  # the step reads a batch already on the devices
    mesh = parallel.make_mesh()
    step, state, batch, table = gan_step_inputs(settings, resolution, mesh)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, table).compile()
    compile_seconds = time.perf_counter() - t0
    state, _ = compiled(state, batch, table)  # first call pays allocation
    jax.block_until_ready(state)
    steps, t0, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        state, _ = compiled(state, batch, table)
        jax.block_until_ready(state)
        steps += 1
        elapsed = time.perf_counter() - t0
        if _enough_gan_steps(settings, steps, elapsed):
            break
    cpu = time.process_time() - cpu0
    return {
        "compile s": compile_seconds,
        "steps": steps,
        GAN_RATE: steps * settings.batch / elapsed,
        "GAN img/cpu-s": steps * settings.batch / cpu,
    }


_DICOM_SOURCE: dict[str, epath.Path] = {}  # the CT phantom, written once per run


def dicom_source(settings: Settings, root: epath.Path) -> epath.Path:
    """The CT phantom the `dicom` section reads, written on first use."""
    if "raw" not in _DICOM_SOURCE:
        from synthjax.data.phantoms.ct import writer as phantom_ct

        raw = root / "ct_phantom"
        start = time.monotonic()
        stats = phantom_ct.write_rsna_phantom(
            raw,
            num_patients=max(2, settings.dicom_slices // 24),
            image_size=settings.dicom_size,
            slices_per_series=(16, 32),
            noise=1.0,
            subtlety=1.0,
            seed=0,
        )
        seconds = time.monotonic() - start
        print(
            f"dicom: wrote {stats['slices']} phantom DICOM slices at {settings.dicom_size}px in "
            f"{seconds:.0f} s ({stats['slices'] / seconds:.0f} slices/s)",
            file=sys.stderr,
        )
        _DICOM_SOURCE["raw"] = raw
    return _DICOM_SOURCE["raw"]


def measure_dicom_preparation(
    settings: Settings, resolution: int, scratch: epath.Path
) -> dict[str, float]:
    """Times the RSNA builder (DICOM -> 3 windowed channels -> shards) at this resolution."""
    from synthjax.data import rsna_ich

    raw = dicom_source(settings, settings.scratch_root)
    base = max(resolution, 256)
    start = time.monotonic()
    _, report = rsna_ich.prepare_rsna_ich(
        raw, scratch / "data", resolution=resolution, base_resolution=base, workers=0
    )
    # Wall clock only: the work happens in pool workers, whose CPU time is not ours.
    return {"DICOM prep img/s": report["counts"]["kept"] / (time.monotonic() - start)}


# --- table --------------------------------------------------------------------------------

# Each runs once per resolution in a fresh scratch directory; their columns join one row.
SECTIONS: dict[str, Section] = {
    "loader": measure_loader,
    "gan": measure_gan_step,
    "dicom": measure_dicom_preparation,
}


def verdict(row: dict[str, float]) -> str:
    headroom = row["headroom"]
    if headroom < 1:
        return f"input-bound: the step could take {1 / headroom:.1f}x the images it gets"
    margin = " (thin on CPU, where both share the cores)" if headroom < 3 else ""
    return f"compute-bound: the input pipeline is {headroom:.1f}x faster than the step{margin}"


def _format(value: float) -> str:
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def print_table(rows: dict[int, dict[str, float]]) -> None:
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    cells = {
        r: [f"{r}x{r}"] + [_format(row[c]) if c in row else "-" for c in columns]
        for r, row in rows.items()
    }
    titles = ["resolution", *columns]
    widths = [max(len(t), *(len(c[i]) for c in cells.values())) for i, t in enumerate(titles)]
    line = "  ".join(t.rjust(w) for t, w in zip(titles, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row_cells in cells.values():
        print("  ".join(c.rjust(w) for c, w in zip(row_cells, widths, strict=True)))


# --- setup --------------------------------------------------------------------------------


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`path/to/config.py[:variant]` -> its `get_config(variant)`, as `synthjax.main` loads it."""
    path, _, variant = spec.partition(":")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(os.path.join(folder, "__init__.py")):  # `from configs import default`
        sys.path.insert(0, os.path.dirname(folder))
    module_spec = importlib.util.spec_from_file_location("benchmark_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant or None)


def print_header(settings: Settings, resolutions: list[int], sections: list[str]) -> None:
    gan_cfg = settings.config.gan
    threads = inspect.signature(pipeline.train_iterator).parameters["threads"].default
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} "
        f"device(s), {jax.process_count()} process(es), {os.cpu_count()} CPU cores, "
        f"load average {load:.1f} before the run (other jobs' load skews every figure)"
    )
    print(
        f"sections {','.join(sections)}; resolutions {','.join(map(str, resolutions))}; "
        f"{settings.images} images x {settings.channels} channel(s), {settings.num_labels} "
        f"labels, global batch {settings.batch}, {settings.seconds:g} s per measurement"
    )
    print(
        f"loader: {IMAGES_PER_SHARD} images per shard, grain train_iterator with {threads} "
        f"threads (the training's default), hflip {settings.config.dataset.hflip}, "
        f"{LOADER_WARMUP_BATCHES} warm-up batches"
    )
    if "gan" in sections:
        steps = settings.gan_steps or f"as many as fit in {settings.seconds:g} s (>= 2)"
        print(
            f"gan: sizes from {settings.config_path}: fmap_base {gan_cfg.fmap_base}, "
            f"fmap_max {gan_cfg.fmap_max}, latent {gan_cfg.latent_dim}, mbstd group "
            f"{gan_cfg.mbstd_group_size}, conv lowering "
            f"{resolve_conv_lowering(settings.config.conv_lowering)}; 1 warm-up step, "
            f"timed steps: {steps}"
        )
    print()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", default="32,64,128,256", help="comma-separated")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--images", type=int, default=2048, help="records in the dataset")
    parser.add_argument("--batch", type=int, default=64, help="global batch, loader and GAN")
    parser.add_argument("--num-labels", type=int, default=14, help="CheXpert has 14")
    parser.add_argument("--seconds", type=float, default=5.0, help="per timed measurement")
    parser.add_argument(
        "--gan-steps", type=int, default=None, help="timed GAN steps (default: --seconds' worth)"
    )
    parser.add_argument(
        "--gan-config",
        default=os.path.relpath(os.path.join(REPO_DIR, "configs", "quickstart.py")),
        help="config[:variant] the GAN sizes come from",
    )
    parser.add_argument("--skip-gan", action="store_true", help="do not time the GAN step")
    parser.add_argument("--skip-dicom", action="store_true", help="do not time DICOM prep")
    parser.add_argument("--dicom-slices", type=int, default=480, help="CT phantom slices")
    parser.add_argument("--dicom-size", type=int, default=512, help="CT phantom side (RSNA: 512)")
    return parser.parse_args()


def measure_resolution(
    settings: Settings, resolution: int, sections: dict[str, Section]
) -> dict[str, float]:
    """One table row: every section's columns, then the headroom when both ends ran."""
    row: dict[str, float] = {}
    # Removed after each resolution: at 256x256 the default dataset is ~150 MB.
    with tempfile.TemporaryDirectory(prefix="data_throughput-") as tmp:
        for name, measure in sections.items():
            print(f"[{resolution}x{resolution}] {name} ...", file=sys.stderr, flush=True)
            scratch = epath.Path(tmp) / name
            scratch.mkdir()
            row.update(measure(settings, resolution, scratch))
    if LOADER_RATE in row and GAN_RATE in row:
        row["headroom"] = row[LOADER_RATE] / row[GAN_RATE]
    return row


def main() -> None:
    args = parse_args()
    logging.set_verbosity(logging.WARNING)  # dataset opens log at INFO
    settings = Settings(
        images=args.images,
        batch=args.batch,
        channels=args.channels,
        num_labels=args.num_labels,
        seconds=args.seconds,
        gan_steps=args.gan_steps,
        config_path=args.gan_config,
        config=load_config(args.gan_config),
        dicom_slices=args.dicom_slices,
        dicom_size=args.dicom_size,
    )
    resolutions = [int(r) for r in args.resolutions.split(",")]
    skipped = {name for name, skip in (("gan", args.skip_gan), ("dicom", args.skip_dicom)) if skip}
    sections = {n: f for n, f in SECTIONS.items() if n not in skipped}
    print_header(settings, resolutions, list(sections))

    with tempfile.TemporaryDirectory(prefix="data_throughput-run-") as run_scratch:
        settings = dataclasses.replace(settings, scratch_root=epath.Path(run_scratch))
        rows = {r: measure_resolution(settings, r, sections) for r in resolutions}

    print_table(rows)
    print("\nimg/s: wall-clock over the timed span; img/cpu-s: per CPU-second of this process")
    verdicts = [f"{r}x{r}: {verdict(row)}" for r, row in rows.items() if "headroom" in row]
    if verdicts:
        print(
            "headroom = loader img/s / GAN img/s, each measured alone (in training they run at "
            "once and, on a CPU, share its cores).\n"
        )
        print("\n".join(verdicts))


if __name__ == "__main__":
    main()
