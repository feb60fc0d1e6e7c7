"""Phantom sources and shared checks for the data tests.

The phantoms here look as the pipeline's default phantom does (noise, subtlety and anatomy
variation all 1), so a test names only what it is about: how many patients, the image size,
the seed. Imported by the builder and phantom tests (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from synthjax.core.errors import DataNotFoundError
from synthjax.data.phantoms.ct import writer as phantom_ct
from synthjax.data.phantoms.cxr import writer as phantom_cxr

CXR_LOOK = {"noise": 1.0, "subtlety": 1.0, "anatomy_variation": 1.0}
CT_LOOK = {"noise": 1.0, "subtlety": 1.0}


def write_cxr_phantom(root: str | os.PathLike, **settings) -> dict:
    """`write_chexpert_phantom` with the default look unless `settings` say otherwise."""
    return phantom_cxr.write_chexpert_phantom(root, **{**CXR_LOOK, **settings})


def write_ct_phantom(root: str | os.PathLike, **settings) -> dict:
    """`write_rsna_phantom` with the default look unless `settings` say otherwise."""
    return phantom_ct.write_rsna_phantom(root, **{**CT_LOOK, **settings})


def check_says_where_to_get_it(prepare: Callable, tmp_path, *clues: str) -> None:
    """`prepare` on a missing folder and on an empty one raises DataNotFoundError naming the
    flag to set, the folder passed and every one of `clues` (the download page, the file)."""
    for manual_dir in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(DataNotFoundError) as error:
            prepare(manual_dir, tmp_path / "data", resolution=32)
        message = str(error.value)
        assert "--config.dataset.manual_dir" in message and str(manual_dir) in message
        assert all(clue in message for clue in clues), message
