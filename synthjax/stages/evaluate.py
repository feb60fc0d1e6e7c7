"""Stage `evaluate`: utility (TRTR against TSTR), fidelity and the automated reader, on the
real test set."""

from __future__ import annotations

from typing import Any

from synthjax.eval import evaluate as library
from synthjax.workdir import Run


def run(run: Run) -> dict[str, Any]:
    return library.run_stage(run)
