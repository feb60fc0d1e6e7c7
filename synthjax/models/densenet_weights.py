"""Pretrained DenseNet weights from a local file: torchvision's state_dict names <-> ours.

Data flow: the user converts torchvision's densenet121 checkpoint (ImageNet weights they
obtained themselves) once with `scripts/convert_densenet121.py` into an .npz keyed by
torchvision's state_dict names; `load_pretrained` reads it into Flax variables for
`densenet.DenseNet` and `train/classifier.py` starts the classifier from them
(`classifier.weights`, the study's protocol). Nothing is ever downloaded.

What the file gives: the stem, every dense layer and transition, and the final norm, i.e.
every parameter except the head (`head`, one logit per label, new and randomly
initialised), and BatchNorm's running statistics (`batch_stats`). Those statistics are the
starting point: training runs BatchNorm on batch statistics and moves the running averages
towards them (momentum 0.9 per step, torch's 0.1), evaluation uses the running averages, as
fine-tuning does in torchvision and did in the study's Keras code.

Names: features.conv0 <-> stem_conv, features.norm0 <-> stem_norm,
features.denseblock{b}.denselayer{l}.{norm1,conv1,norm2,conv2} <-> block{b}_layer{l}_...,
features.transition{b}.{norm,conv} <-> transition{b}_{norm,conv}, features.norm5 <->
final_norm; conv weight (OIHW) <-> kernel (HWIO), norm weight/bias <-> scale/bias,
running_mean/var <-> batch_stats mean/var. The expected names and shapes come from the
Flax module itself (`jax.eval_shape`), so the loader and the model cannot disagree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from synthjax.models.torch_checkpoints import layout_differences

CONVERT_SCRIPT = "scripts/convert_densenet121.py"
HEAD = "head"  # new for each task: never read from the file
# Entries of torchvision's state_dict that are not ours: the ImageNet classifier and torch
# BatchNorm's step counters.
IGNORED_PREFIXES = ("classifier.",)
IGNORED_SUFFIXES = (".num_batches_tracked",)

_LAYER = re.compile(r"^block(\d+)_layer(\d+)_(norm1|conv1|norm2|conv2)$")
_TRANSITION = re.compile(r"^transition(\d+)_(norm|conv)$")
_FIXED = {
    "stem_conv": "features.conv0",
    "stem_norm": "features.norm0",
    "final_norm": "features.norm5",
}
_LEAVES = {  # (collection, Flax leaf) -> torch leaf
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def torch_module_name(module: str) -> str:
    """Our Flax module name -> torchvision's module path ('block2_layer3_conv1' ->
    'features.denseblock2.denselayer3.conv1')."""
    if module in _FIXED:
        return _FIXED[module]
    if m := _LAYER.match(module):
        return f"features.denseblock{m[1]}.denselayer{m[2]}.{m[3]}"
    if m := _TRANSITION.match(module):
        return f"features.transition{m[1]}.{m[2]}"
    raise ValueError(f"no torchvision name for DenseNet module {module!r}")


def _variable_shapes(model: nn.Module, input_channels: int) -> dict:
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, input_channels)), train=False)
    )


def expected_state_dict_shapes(model: nn.Module, input_channels: int = 3) -> dict:
    """torchvision state_dict name -> torch shape (OIHW for convs) of every tensor the file
    must hold for `model` (all but the head), sorted by name."""
    out = {}
    for collection, tree in _variable_shapes(model, input_channels).items():
        for module, leaves in tree.items():
            if module == HEAD:
                continue
            for leaf, value in leaves.items():
                shape = tuple(value.shape)
                if leaf == "kernel":
                    shape = (shape[3], shape[2], shape[0], shape[1])  # HWIO -> OIHW
                name = f"{torch_module_name(module)}.{_LEAVES[(collection, leaf)]}"
                out[name] = shape
    return dict(sorted(out.items()))


def _short_list(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def load_pretrained(path: str | os.PathLike, model: nn.Module, input_channels: int = 3) -> dict:
    """{'params': ..., 'batch_stats': ...} for every module of `model` but the head, from the
    .npz `scripts/convert_densenet121.py` writes (float32, HWIO kernels).

    Raises:
      FileNotFoundError: no file at `path` (the message says how to make it).
      ValueError: names missing, unexpected or of the wrong shape (the message names them
        and the converter).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"DenseNet-121 weights not found at {path!r} (classifier.weights). They are never "
            "downloaded: save torchvision's densenet121 ImageNet state_dict yourself, then "
            f"convert it once on any machine with PyTorch: python {CONVERT_SCRIPT} "
            f"densenet121.pth {path}"
        )
    expected = expected_state_dict_shapes(model, input_channels)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {
            k: npz[k]
            for k in npz.files
            if not k.startswith(IGNORED_PREFIXES) and not k.endswith(IGNORED_SUFFIXES)
        }
    missing, extra, wrong = layout_differences(expected, arrays)
    problems = [
        f"{what}: {_short_list(names)}"
        for what, names in (("missing", missing), ("unexpected", extra), ("wrong shapes", wrong))
        if names
    ]
    if problems:
        raise ValueError(
            f"{path} does not hold the state_dict of this DenseNet (classifier.arch) with "
            f"{input_channels}-channel input (" + "; ".join(problems) + "). Write it with "
            f"{CONVERT_SCRIPT} from torchvision's densenet121."
        )
    torch_leaf = {flax: torch for flax, torch in _LEAVES.items()}
    variables: dict = {"params": {}, "batch_stats": {}}
    for collection, tree in _variable_shapes(model, input_channels).items():
        for module, leaves in tree.items():
            if module == HEAD:
                continue
            prefix = torch_module_name(module)
            for leaf in leaves:
                value = np.asarray(arrays[f"{prefix}.{torch_leaf[(collection, leaf)]}"], np.float32)
                if leaf == "kernel":
                    value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
                variables[collection].setdefault(module, {})[leaf] = value
    return variables


def with_pretrained(variables: dict, pretrained: dict | None) -> dict:
    """`variables` with every module `pretrained` holds replaced by its arrays (the head
    keeps its fresh initialisation). Works on traced arrays (inside jit)."""
    if pretrained is None:
        return variables
    return {
        collection: {**tree, **pretrained.get(collection, {})}
        for collection, tree in variables.items()
    }
