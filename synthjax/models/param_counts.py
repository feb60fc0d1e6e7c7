"""Parameter counts of both GANs at every resolution, with the study's settings.

    python -m synthjax.models.param_counts            # 32 ... 1024, as in the README
    python -m synthjax.models.param_counts 64 128     # chosen resolutions

Counts come from shapes only (`jax.eval_shape`), so even 1024x1024 takes a second. cpD-GAN:
fmap_base 16384; prog-GAN: fmap_base 8192 with the input and output layers of every phase
(grown from 8x8); both fmap_max 512, latent 512, 14 labels, 1 channel.
"""

from __future__ import annotations

import sys

from synthjax.models import cpd_gan, prog_gan

RESOLUTIONS = (32, 64, 128, 256, 512, 1024)


def study_param_counts(
    resolutions: tuple[int, ...] = RESOLUTIONS,
) -> dict[int, dict[str, tuple[int, int]]]:
    """{resolution: {"cpd": (G, D), "prog": (G, D)}}."""
    return {
        r: {"cpd": cpd_gan.param_counts(r), "prog": prog_gan.param_counts(r)} for r in resolutions
    }


def markdown_table(counts: dict[int, dict[str, tuple[int, int]]]) -> str:
    lines = [
        "| resolution | cpD G | cpD D | prog G | prog D |",
        "|---|---|---|---|---|",
    ]
    for r, row in counts.items():
        (cg, cd), (pg, pd) = row["cpd"], row["prog"]
        lines.append(f"| {r}x{r} | {cg:,} | {cd:,} | {pg:,} | {pd:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    chosen = tuple(int(a) for a in sys.argv[1:]) or RESOLUTIONS
    print(markdown_table(study_param_counts(chosen)))
