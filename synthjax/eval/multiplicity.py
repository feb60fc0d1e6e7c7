"""Multiplicity: p-values adjusted for the number of tests they were read together with.

The `evaluate` stage runs DeLong's paired test (TRTR vs TSTR AUROC, `auc.delong_test`) once
per label and once per label combination; a reader scanning those rows for "p < 0.05" makes
that many comparisons at once, so each row also gets Holm's step-down adjustment over the
whole family (`add_holm_adjusted`). Holm controls the family-wise error rate under any
dependence between the tests (labels and combinations share test images), and is uniformly
more powerful than Bonferroni. Pure Python and numpy, no model code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def _defined(p: float | None) -> bool:
    return p is not None and not math.isnan(p)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the order given.

    Holm (1979): with the m defined p-values sorted ascending, p_(1) <= ... <= p_(m), the
    adjusted p_(i) is max over j <= i of min(1, (m - j + 1) * p_(j)); rejecting where the
    adjusted p is below alpha keeps the family-wise error rate at alpha. Equal to statsmodels'
    `multipletests(p, method="holm")[1]`.

    Args:
      p_values: float[n] in [0, 1]; None or NaN where a test could not be computed.

    Returns:
      n adjusted p-values; None where the input was None or NaN (left out of the family, so
      m counts only the defined ones).
    """
    defined = [(float(p), i) for i, p in enumerate(p_values) if _defined(p)]
    for p, _ in defined:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must lie in [0, 1]; got {p}")
    adjusted: list[float | None] = [None] * len(p_values)
    m = len(defined)
    running = 0.0
    # A stable sort: ties keep their order, and get the same adjusted value anyway.
    for rank, (p, i) in enumerate(sorted(defined, key=lambda pair: pair[0])):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def add_holm_adjusted(
    row_groups: Iterable[list[dict[str, Any]]],
    key: str = "delong_p",
    adjusted_key: str = "delong_p_holm",
) -> int:
    """Adds `adjusted_key` (Holm over every row of every group) beside `key` in each row.

    One family: all rows of all groups together (e.g. the per-label and the per-combination
    rows of one report). Rows without `key`, or with it None or NaN, get None and do not count.
    Returns the family's size m (the number of defined p-values).
    """
    rows = [row for group in row_groups for row in group]
    adjusted = holm([row.get(key) for row in rows])
    for row, p in zip(rows, adjusted, strict=True):
        row[adjusted_key] = p
    return sum(p is not None for p in adjusted)
