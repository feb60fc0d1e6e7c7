"""Stage `prepare`: the raw folder (or the built-in phantom) -> prepared shards, the
benchmark subset and the duplicates between splits."""

from __future__ import annotations

from typing import Any

from synthjax.core.workdir import Run
from synthjax.data import prepare as library


def run(run: Run) -> dict[str, Any]:
    return library.run_stage(run)
