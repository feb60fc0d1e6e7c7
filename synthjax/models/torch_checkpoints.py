"""Reading a PyTorch checkpoint for the weight converters in `scripts/`.

PyTorch is needed only where a converter runs (once, on any machine that has it): nothing
here imports it until `load_state_dict` is called, and the package never calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

NO_TORCH = (
    "PyTorch is not installed here. The .pth checkpoint can only be read by PyTorch: run this "
    "once on any machine with PyTorch (pip install torch), then copy the .npz it writes."
)


def to_float32(value: Any) -> np.ndarray:
    """A tensor or array as a float32 NumPy array."""
    if hasattr(value, "detach"):  # a torch.Tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def load_state_dict(path: str) -> Mapping[str, Any]:
    """The state_dict in the .pth file `path` (also one saved as {"state_dict": ...}).

    Exits with what to do when PyTorch is missing or the file holds no state_dict.
    """
    try:
        import torch  # only this step needs PyTorch
    except ImportError:
        raise SystemExit(NO_TORCH) from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # PyTorch < 1.13 has no weights_only
        checkpoint = torch.load(path, map_location="cpu")
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise SystemExit(f"{path} does not hold a state_dict (got {type(checkpoint).__name__})")
    return checkpoint


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
