"""Stage `gan`: the conditional GAN: trains, selects a generator, writes sample grids."""

from __future__ import annotations

from typing import Any

from synthjax.core.workdir import Run
from synthjax.train import gan as library


def run(run: Run) -> dict[str, Any]:
    return library.run_stage(run)
