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
from torch_state_dict import load_state_dict  # this folder's module

from synthjax.models.torch_checkpoints import save_npz, to_float32

DROPPED_PREFIXES = ("fc.", "AuxLogits.")
DROPPED_SUFFIXES = (".num_batches_tracked",)


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """state_dict (tensors or arrays) -> {name: float32 array} without the unused entries."""
    return {
        name: to_float32(value)
        for name, value in state_dict.items()
        if not name.startswith(DROPPED_PREFIXES) and not name.endswith(DROPPED_SUFFIXES)
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="pytorch-fid's pt_inception-2015-12-05 .pth file")
    parser.add_argument("output", help="the .npz to write")
    args = parser.parse_args(argv)

    arrays = convert_state_dict(load_state_dict(args.input))
    if "Conv2d_1a_3x3.conv.weight" not in arrays:
        raise SystemExit(f"{args.input} does not look like an Inception-v3 state_dict")
    save_npz(args.output, arrays)


if __name__ == "__main__":
    main(sys.argv[1:])
