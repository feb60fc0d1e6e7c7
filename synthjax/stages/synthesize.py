"""Stage `synthesize`: the synthetic dataset, drawn, audited for copies and memorization,
and released shuffled."""

from __future__ import annotations

from typing import Any

from synthjax import synthesize as library
from synthjax.core.workdir import Run


def run(run: Run) -> dict[str, Any]:
    return library.run_stage(run)
