"""Reading a PyTorch checkpoint, for the converters in this folder (PyTorch needed here only).

The converters run once, on any machine with PyTorch, and write an .npz the package reads
without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NO_TORCH = (
    "PyTorch is not installed here. The .pth checkpoint can only be read by PyTorch: run this "
    "once on any machine with PyTorch (pip install torch), then copy the .npz it writes."
)


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
