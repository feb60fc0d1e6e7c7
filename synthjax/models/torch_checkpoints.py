"""What the weight converters in `scripts/` share, and the loaders that read their files.

The converters read a PyTorch checkpoint once, on any machine with PyTorch
(`scripts/torch_state_dict.py`); the package itself never imports PyTorch. Here: tensors
to float32 arrays, writing the .npz, and comparing a converted file's arrays with the
layout a model expects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def to_float32(value: Any) -> np.ndarray:
    """A tensor or array as a float32 NumPy array."""
    if hasattr(value, "detach"):  # a torch.Tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def layout_differences(
    expected: Mapping[str, tuple[int, ...]], arrays: Mapping[str, np.ndarray]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, extra, wrong shape) names of a converted file against the expected
    {name: shape}; the wrong ones with their shape and the expected one."""
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    wrong = sorted(
        f"{k} {tuple(arrays[k].shape)} (expected {expected[k]})"
        for k in set(expected) & set(arrays)
        if tuple(arrays[k].shape) != expected[k]
    )
    return missing, extra, wrong


def save_npz(output: str, arrays: Mapping[str, np.ndarray]) -> str:
    """Writes `arrays` to `output` (".npz" added if missing, as np.savez does), says so,
    and returns the path written."""
    output = output if output.endswith(".npz") else output + ".npz"
    np.savez(output, **arrays)
    values = sum(a.size for a in arrays.values())
    print(f"wrote {len(arrays)} arrays ({values:,} values) to {output}")
    return output
