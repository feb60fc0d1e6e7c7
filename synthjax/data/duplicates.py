"""Pixel-identical images among a prepared dataset's kept records, found by content hash.

The `prepare` stage records them (`DIR/prepare/duplicates.json`): a held-out image identical
to a training image (a patient under two ids, a copied file) would make the memorization
audit mistake new patients for copies, so the audit leaves those out of its reference.
"""

from __future__ import annotations

import hashlib

import numpy as np

from synthjax.core.workdir import SPLITS


def find_duplicates(sources, indices: dict[str, np.ndarray]) -> dict[str, list]:
    """Pixel-identical images among the kept records, by content hash.

    "heldout_in_train": [split, index] of validation and test images identical to a
    training image (the audit leaves them out of its reference: they would make new
    patients look like copies); "within_splits": [split, index] of repeats inside a split
    after their first occurrence. Indices are records of the prepared splits.
    """
    seen: dict[str, dict[bytes, int]] = {}
    out: dict[str, list] = {"heldout_in_train": [], "within_splits": []}
    for split in SPLITS:
        seen[split] = {}
        for i in indices[split]:
            image = np.ascontiguousarray(sources[split][int(i)]["image"])
            key = hashlib.sha256(image.tobytes() + str(image.shape).encode()).digest()
            if key in seen[split]:
                out["within_splits"].append([split, int(i)])
            else:
                seen[split][key] = int(i)
            if split != "train" and key in seen["train"]:
                out["heldout_in_train"].append([split, int(i)])
    return out
