"""Converts torchvision's densenet121 ImageNet checkpoint into the .npz that synthjax reads.

Usage:
    python scripts/convert_densenet121.py IN.pth OUT.npz

IN.pth is a torchvision DenseNet-121 state_dict, which you obtain yourself (synthjax never
downloads weights), e.g. on a machine with torchvision:

    python -c "import torch, torchvision; torch.save(torchvision.models.densenet121(
        weights='IMAGENET1K_V1').state_dict(), 'densenet121.pth')"

or torchvision's file densenet121-a639ec97.pth as it is (its older names, 'norm.1' for
'norm1', are renamed as torchvision's own loader does). Run this once on any machine with
PyTorch (numpy and torch are all it needs, not synthjax or JAX), then pass OUT.npz as
`--config.classifier.weights` with `--config.classifier.protocol=study`.

OUT.npz holds one float32 array per state_dict entry under torchvision's name (e.g.
'features.denseblock1.denselayer1.conv1.weight', OIHW as in PyTorch). The ImageNet
classifier ('classifier.*': synthjax's head is new for each label set) and BatchNorm's step
counters ('*.num_batches_tracked') are dropped; `synthjax.models.densenet_weights` maps the
rest onto the Flax DenseNet and checks every name and shape.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch_state_dict import load_state_dict  # this folder's module

from synthjax.models.torch_checkpoints import save_npz, to_float32

DROPPED_PREFIXES = ("classifier.",)
DROPPED_SUFFIXES = (".num_batches_tracked",)
# torchvision's densenet loader renames the names of its first released checkpoints
# ('...denselayer1.norm.1.weight' -> '...denselayer1.norm1.weight'); so does this.
OLD_LAYER_NAME = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def torchvision_name(name: str) -> str:
    """A checkpoint's name -> today's torchvision name (no DataParallel 'module.' prefix,
    the old 'norm.1' spelled 'norm1')."""
    name = name.removeprefix("module.")
    if m := OLD_LAYER_NAME.match(name):
        name = m[1] + m[2]
    return name


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """state_dict (tensors or arrays) -> {torchvision name: float32 array}, without the
    ImageNet classifier and the step counters."""
    out = {}
    for name, value in state_dict.items():
        name = torchvision_name(name)
        if name.startswith(DROPPED_PREFIXES) or name.endswith(DROPPED_SUFFIXES):
            continue
        if name in out:
            raise ValueError(f"{name} appears twice in the checkpoint (old and new names?)")
        out[name] = to_float32(value)
    if "features.conv0.weight" not in out:
        raise ValueError("this does not look like a torchvision DenseNet state_dict")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="torchvision densenet121 state_dict (.pth)")
    parser.add_argument("output", help="the .npz to write")
    args = parser.parse_args(argv)

    try:
        arrays = convert_state_dict(load_state_dict(args.input))
    except ValueError as error:
        raise SystemExit(f"{args.input}: {error}") from None
    save_npz(args.output, arrays)


if __name__ == "__main__":
    main(sys.argv[1:])
