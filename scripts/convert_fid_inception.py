"""Converts pytorch-fid's FID Inception checkpoint into the .npz that synthjax reads.

Usage:
    python scripts/convert_fid_inception.py IN.pth OUT.npz

IN.pth is pytorch-fid's `pt_inception-2015-12-05-*.pth` (the port of TensorFlow's Inception
graph of 2015-12-05 that FID is defined on), which you obtain yourself; synthjax never
downloads weights. Run this once on any machine with PyTorch (numpy and torch are all it
needs, not synthjax or JAX), then copy OUT.npz to where `synthjax.models.inception.load_params`
or `features_fn` will read it.

OUT.npz holds one float32 array per state_dict entry under the same name (e.g.
'Conv2d_1a_3x3.conv.weight', OIHW as in PyTorch). The classifier head ('fc.*'), the auxiliary
classifier ('AuxLogits.*') and BatchNorm's step counters ('*.num_batches_tracked') are
dropped: pool3 features need none of them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DROPPED_PREFIXES = ("fc.", "AuxLogits.")
DROPPED_SUFFIXES = (".num_batches_tracked",)
NO_TORCH = (
    "PyTorch is not installed here. The .pth checkpoint can only be read by PyTorch: run this "
    "once on any machine with PyTorch (pip install torch), then copy the .npz it writes."
)


def _to_float32(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """state_dict (tensors or arrays) -> {name: float32 array} without the unused entries."""
    return {
        name: _to_float32(value)
        for name, value in state_dict.items()
        if not name.startswith(DROPPED_PREFIXES) and not name.endswith(DROPPED_SUFFIXES)
    }


def _load_checkpoint(path: str) -> Mapping[str, Any]:
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="pytorch-fid's pt_inception-2015-12-05 .pth file")
    parser.add_argument("output", help="the .npz to write")
    args = parser.parse_args(argv)

    arrays = convert_state_dict(_load_checkpoint(args.input))
    if "Conv2d_1a_3x3.conv.weight" not in arrays:
        raise SystemExit(f"{args.input} does not look like an Inception-v3 state_dict")
    output = args.output if args.output.endswith(".npz") else args.output + ".npz"  # as np.savez
    np.savez(output, **arrays)
    values = sum(a.size for a in arrays.values())
    print(f"wrote {len(arrays)} arrays ({values:,} values) to {output}")


if __name__ == "__main__":
    main(sys.argv[1:])
