"""Benchmark: what a config's training costs on accelerators we do not have here, estimated.

The GAN and classifier train steps of `--config` are compiled (not run) at `--per-device`
images per device; XLA's cost analysis gives the floating-point operations per image and
its memory analysis the program's memory per device (parameters, optimizer state,
activations and temporaries, at that batch). Time per kimg (1,000 training images) on an
accelerator is then

    seconds/kimg = 1000 * GFLOP per image / (devices * peak TFLOP/s * 1000 * MFU)

for the peak the vendor states and an MFU (the fraction of the peak reached) between
`--mfu-low` and `--mfu-high`. These are estimates: the MFU of these steps on those chips
has not been measured (what it reaches on 2 CPU cores is in benchmarks/README.md). Memory
from a CPU compile is a guide to a GPU's or TPU's, not its measure (other compilers fuse
and schedule differently).

    python benchmarks/cost_model.py --config configs/cxr_256.py --per-device 20
"""

from __future__ import annotations

import argparse

import jax
from step_setup import classifier_step, gan_step, program_stats  # this folder's module

from synthjax.core import config_files, parallel

# Dense peak TFLOP/s per chip as the vendors state them: bf16 (and fp32 where the GAN runs
# in float32, its default: `gan.bf16_resolution = 0`), with the HBM per chip in GiB.
HARDWARE = (
    # name, devices, bf16 peak, fp32 peak (TF32 on NVIDIA), HBM GiB per device
    ("1x NVIDIA L4", 1, 121.0, 60.0, 24),
    ("1x NVIDIA A100 80GB", 1, 312.0, 156.0, 80),
    ("8x NVIDIA A100 80GB", 8, 312.0, 156.0, 80),
    ("8x NVIDIA H100 SXM", 8, 989.0, 495.0, 80),
    ("TPU v4-8 (4 chips)", 4, 275.0, 275.0, 32),
    ("TPU v5e-8 (v5litepod-8)", 8, 197.0, 197.0, 16),
    ("TPU v6e-8", 8, 918.0, 918.0, 32),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/cxr_256.py")
    parser.add_argument("--per-device", type=int, default=20, help="images per device per step")
    parser.add_argument("--archs", default="cpd,prog")
    parser.add_argument("--mfu-low", type=float, default=0.2)
    parser.add_argument("--mfu-high", type=float, default=0.4)
    parser.add_argument("--skip-classifier", action="store_true")
    args = parser.parse_args()
    cfg = config_files.load(args.config)
    resolution = int(cfg.dataset.resolution)
    mesh = parallel.make_mesh(-1)
    batch = args.per_device * jax.device_count()
    print(
        f"config {args.config}: {resolution}x{resolution}, fmap_base {cfg.gan.cpd.fmap_base}, "
        f"fmap_max {cfg.gan.cpd.fmap_max}, GAN batch {cfg.gan.cpd.batch_size} "
        f"(the config's); compiled at {args.per_device} image(s) per device, "
        f"bf16 from {cfg.gan.bf16_resolution or 'never (float32)'}"
    )
    steps = []
    for arch in args.archs.split(","):
        step, state, inputs = gan_step(cfg, resolution, batch, mesh, arch=arch)
        flops, mib, compile_s = program_stats(step, state, *inputs)
        steps.append((f"gan {arch}", flops / batch / 1e9, mib, compile_s, "gan"))
        print(f"  compiled gan {arch} in {compile_s:.0f} s", flush=True)
        del step, state, inputs
    if not args.skip_classifier:
        step, state, inputs = classifier_step(cfg, resolution, batch, mesh)
        flops, mib, compile_s = program_stats(step, state, *inputs)
        steps.append(
            (f"classifier {cfg.classifier.arch}", flops / batch / 1e9, mib, compile_s, "cls")
        )
        print(f"  compiled classifier in {compile_s:.0f} s", flush=True)

    print("\n| step | GFLOP per image | program memory per device (MiB) |")
    print("|---|---|---|")
    for name, gflop, mib, _, _ in steps:
        print(f"| {name} | {gflop:.1f} | {mib:,.0f} |")

    mfu = f"MFU {args.mfu_low:.0%}-{args.mfu_high:.0%}"
    print(f"\nEstimated seconds per kimg ({mfu}; float32 peaks for the GAN, bf16 for the rest):")
    print("| hardware | " + " | ".join(name for name, *_ in steps) + " |")
    print("|---|" + "---|" * len(steps))
    gan_fp32 = not cfg.gan.bf16_resolution
    for hw, devices, bf16, fp32, _ in HARDWARE:
        cells = []
        for _, gflop, _, _, kind in steps:
            peak = fp32 if (kind == "gan" and gan_fp32) else bf16
            fast = 1000 * gflop / (devices * peak * 1000 * args.mfu_high)
            slow = 1000 * gflop / (devices * peak * 1000 * args.mfu_low)
            cells.append(f"{fast:.3g}-{slow:.3g}")
        print(f"| {hw} | " + " | ".join(cells) + " |")
    kimg = cfg.gan.train_kimg
    print(f"\nThe config trains the GAN for {kimg:,.0f} kimg; multiply to get a whole run.")


if __name__ == "__main__":
    main()
