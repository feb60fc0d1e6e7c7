r"""The release gate's error rates: honest generators it refuses, copying ones it passes.

On a workdir whose `prepare`, `classifier_real` and `gan` have finished (the quickstart, or
any config), this runs synthesize's memorization audit (`synthesize.memorization_audit`,
the code the stage runs) on synthetic sets from known generators, one image per real image
of every split with its label vector, as the stage draws them:

- honest: the trained GAN, under `--seeds` different latent seeds;
- ideal: new patients, the images of other phantom hospitals (`--nulls`: workdirs whose
  `prepare` ran with another `dataset.phantom.seed`), matched by label vector;
- copying: the GAN's images with a share of them replaced by training images, exact or
  near (new contrast, brightness and noise), and a generator that near-copies every one.

It prints one line per set and the false-refusal and false-release rates, and the audit's
time per 10,000 synthetic images:

  python benchmarks/privacy_gate.py --config=configs/quickstart.py --workdir=runs/quickstart \
      --nulls runs/null/p1 runs/null/p2 --seeds 10
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import numpy as np
from etils import epath

from synthjax.core import compiler, config_files, parallel
from synthjax.core.workdir import SPLITS, Run, read_json
from synthjax.data.loader import load_source
from synthjax.data.prepared import prepared
from synthjax.eval import privacy
from synthjax.train import gan


class ArraySource:
    """A split of in-memory images in the loader's record format."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.image_shape = images.shape[1:]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "labels": self.labels[i], "id": f"x-{i}"}


def _gan_sampler(run: Run):
    models, g_ema = gan.restore_generator(run)
    from synthjax import synthesize

    fn = compiler.jit(
        functools.partial(
            synthesize.draw_images, models=models, latent_dim=run.config.gan.latent_dim
        )
    )
    batch = run.config.synthesize.batch_size

    def sample(seed: int, labels: np.ndarray, split_id: int) -> np.ndarray:
        key = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), split_id))
        out = []
        for start in range(0, len(labels), batch):
            y = labels[start : start + batch]
            n = len(y)
            y = np.concatenate([y, np.repeat(y[-1:], batch - n, 0)])
            idx = np.arange(start, start + batch, dtype=np.uint32)
            inputs = parallel.from_full({"i": idx, "y": y}, run.mesh)
            out.append(parallel.gather(fn(g_ema, key, inputs["i"], inputs["y"]))[:n])
        return np.concatenate(out)

    return sample


def _by_label(images: np.ndarray, labels: np.ndarray, wanted: np.ndarray, rng) -> np.ndarray:
    """For each wanted label vector, an image with that label vector (cycled, shuffled);
    any image where no image has it."""
    pools: dict[bytes, list[int]] = {}
    for i, y in enumerate(labels):
        pools.setdefault(y.tobytes(), []).append(i)
    for pool in pools.values():
        rng.shuffle(pool)
    used: dict[bytes, int] = {}
    out = []
    for y in wanted:
        pool = pools.get(y.tobytes()) or list(range(len(images)))
        k = used.get(y.tobytes(), 0)
        used[y.tobytes()] = k + 1
        out.append(images[pool[k % len(pool)]])
    return np.stack(out)


def _all(source, indices) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([source[int(i)]["image"] for i in indices])
    return images, source.labels[np.asarray(indices)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--nulls", nargs="*", default=[])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rates", type=float, nargs="*", default=[0.005, 0.01, 0.02])
    parser.add_argument("--timing_images", type=int, default=10000)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    from synthjax import synthesize

    config = config_files.load(args.config)
    run = Run(config=config, workdir=epath.Path(args.workdir).absolute(), mesh=parallel.make_mesh())
    data = prepared(run)
    labels = {s: data.source(s).labels[data.subset.indices[s]] for s in SPLITS}
    train_images, train_labels = _all(data.source("train"), data.subset.indices["train"])
    sample = _gan_sampler(run)
    rng = np.random.default_rng(12345)

    def near(images: np.ndarray) -> np.ndarray:
        # Another draw of the calibration's family (a seed the audit never uses).
        return privacy.near_copies(images, seed=987654)

    def with_copies(sets: dict, rate: float, exact: bool) -> dict:
        out = {}
        for split, images in sets.items():
            images = images.copy()
            k = round(rate * len(images))
            slots = rng.choice(len(images), k, replace=False)
            copies = _by_label(train_images, train_labels, labels[split][slots], rng)
            images[slots] = copies if exact else near(copies)
            out[split] = images
        return out

    cases: list[tuple[str, str, dict]] = []  # (kind, name, {split: images})
    for seed in range(args.seeds):
        gan_sets = {s: sample(seed, labels[s], i) for i, s in enumerate(SPLITS)}
        cases.append(("honest", f"gan seed {seed}", gan_sets))
        if seed < 3:
            for rate in args.rates:
                cases.append(
                    ("copying", f"gan {seed} + {rate:.1%} exact", with_copies(gan_sets, rate, True))
                )
                cases.append(
                    ("copying", f"gan {seed} + {rate:.1%} near", with_copies(gan_sets, rate, False))
                )
            nearall = {
                s: near(_by_label(train_images, train_labels, labels[s], rng)) for s in SPLITS
            }
            cases.append(("copying", f"near-copies of all (draw {seed})", nearall))
    for null in args.nulls:
        summary = read_json(Path(null) / "prepare" / "summary.json")
        subset = np.load(Path(null) / "prepare" / "subset.npz")
        pool_images, pool_labels = [], []
        for s in SPLITS:
            im, y = _all(load_source(summary["dataset_dir"], s), subset[f"indices_{s}"])
            pool_images.append(im)
            pool_labels.append(y)
        pool_images, pool_labels = np.concatenate(pool_images), np.concatenate(pool_labels)
        sets = {s: _by_label(pool_images, pool_labels, labels[s], rng) for s in SPLITS}
        cases.append(("ideal", f"new patients ({Path(null).name})", sets))

    rows = []
    for kind, name, sets in cases:
        draft = {s: ArraySource(sets[s], labels[s]) for s in SPLITS}
        start = time.perf_counter()
        audit, _, _ = synthesize.memorization_audit(run, draft)
        seconds = time.perf_counter() - start
        row = {
            "kind": kind,
            "name": name,
            "releasable": audit["audit_passed"],
            "seconds": round(seconds, 1),
            "spaces": {
                space: {
                    k: a[k]
                    for k in (
                        "copies",
                        "heldout_below_floor",
                        "copies_p_value",
                        "close_rate",
                        "heldout_close_rate",
                        "excess_p_value",
                        "seen_share",
                        "seen_share_expected",
                        "seen_p_value",
                        "floor_distance",
                        "threshold_distance",
                    )
                }
                for space, a in audit["spaces"].items()
            },
        }
        rows.append(row)
        detail = "; ".join(
            f"{space}: copies {a['copies']} (held-out {a['heldout_below_floor']}), close "
            f"{100 * a['close_rate']:.2f}% vs {100 * a['heldout_close_rate']:.2f}%, "
            f"p {a['excess_p_value']:.2g}, seen {100 * a['seen_share']:.1f}% vs "
            f"{100 * a['seen_share_expected']:.1f}% p {a['seen_p_value']:.2g}"
            for space, a in row["spaces"].items()
        )
        verdict = "pass  " if row["releasable"] else "REFUSE"
        print(f"{kind:8s} {name:32s} {verdict} {seconds:5.1f}s  {detail}", flush=True)

    honest = [r for r in rows if r["kind"] in ("honest", "ideal")]
    copying = [r for r in rows if r["kind"] == "copying"]
    print()
    for kind in ("honest", "ideal"):
        group = [r for r in rows if r["kind"] == kind]
        if group:
            refused = sum(not r["releasable"] for r in group)
            print(f"false refusals, {kind}: {refused} of {len(group)}")
    if copying:
        passed = [r["name"] for r in copying if r["releasable"]]
        print(f"false releases: {len(passed)} of {len(copying)} copying sets {passed}")

    # Time per 10,000 synthetic images (the GAN's, labels cycled from the training split).
    n = args.timing_images
    y = np.resize(labels["train"], (n, labels["train"].shape[1]))
    big = {"train": ArraySource(sample(99, y, 0), y)}
    big.update({s: ArraySource(sample(99, labels[s][:1], 1), labels[s][:1]) for s in SPLITS[1:]})
    start = time.perf_counter()
    synthesize.memorization_audit(run, big)
    total = time.perf_counter() - start
    base = np.median([r["seconds"] for r in honest]) if honest else 0.0
    synth_n = sum(len(v) for v in labels.values())
    print(
        f"\naudit of {n} synthetic images against {len(train_images)} training images: "
        f"{total:.1f} s on {jax.device_count()} {jax.default_backend()} device(s) "
        f"(with {synth_n} synthetic images: {base:.1f} s)"
    )
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "timing_s": total}, indent=2))


if __name__ == "__main__":
    main()
