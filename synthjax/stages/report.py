"""Stage `report`: `report.json` and `report.md`, the headline numbers, the verdict and figures."""

from __future__ import annotations

from typing import Any

from synthjax import report as library
from synthjax.core.workdir import Run


def run(run: Run) -> dict[str, Any]:
    return library.run_stage(run)
