"""The study's way of reading AUROC, for setting our numbers beside its published ones.

The study's evaluation code replaced any per-label AUC below 0.5 by 1 - AUC before
averaging: max(AUC, 1 - AUC). We never do that for our own numbers (`auc.py`: it hides a
classifier that learned a label backwards and lifts the mean near chance), but a comparison
with the study's figures (`synthjax/analysis.py`, STUDY_FIGURES) is only like for like in
its convention. `add_study_style_auroc` adds that reading to the `evaluate` stage's utility
result, under names that say so, beside ours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def study_style_auroc(auroc: float | None) -> float | None:
    """max(AUC, 1 - AUC): an AUC below 0.5 flipped, as the study's code did; None stays None."""
    if auroc is None or math.isnan(auroc):
        return None
    return max(auroc, 1.0 - auroc)


def study_style_mean(per_label: Sequence[float | None]) -> float | None:
    """Mean of the flipped per-label AUCs over the defined ones; None if there are none."""
    flipped = [f for f in map(study_style_auroc, per_label) if f is not None]
    return sum(flipped) / len(flipped) if flipped else None


def add_study_style_auroc(utility: dict[str, Any]) -> dict[str, Any]:
    """Adds the study-style AUROC to a utility result (the `evaluate` stage's), in place.

    Per label row: `trtr_auroc_study_style`, `tstr_auroc_study_style`; overall:
    `trtr_auroc_mean_study_style`, `tstr_auroc_mean_study_style` (over the same labels as
    our means, so the flip is the only difference). No interval: the study gave none.
    Returns `utility`.
    """
    rows = utility.get("per_label") or []
    for side in ("trtr", "tstr"):
        for row in rows:
            row[f"{side}_auroc_study_style"] = study_style_auroc(row.get(f"{side}_auroc"))
        utility[f"{side}_auroc_mean_study_style"] = study_style_mean(
            [row.get(f"{side}_auroc") for row in rows]
        )
    return utility
