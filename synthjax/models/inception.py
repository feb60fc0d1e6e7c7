"""Inception-v3 pool3 features for Fréchet Inception Distance (FID), loaded from a local file.

The project's default feature space for Fréchet distances (GAN monitoring, fidelity metrics)
is its own real-data classifier (`densenet.DenseNet`). This module is an optional second
feature space that exists only so that results can be compared with published FIDs: the
2048-d pool3 features of the Inception-v3 graph of 2015-12-05 that FID is defined on, in the
form pytorch-fid ports it (torchvision's Inception3 with the blocks `FIDInceptionA`,
`FIDInceptionC`, `FIDInceptionE_1` and `FIDInceptionE_2` swapped in).

Weights are never downloaded. The user converts pytorch-fid's `pt_inception-2015-12-05`
checkpoint, obtained by themselves, once with `scripts/convert_fid_inception.py` into an .npz
keyed by the PyTorch state_dict names; `load_params` turns that file into Flax variables.

Pipeline, matching pytorch-fid's `InceptionV3(resize_input=True, normalize_input=True)`:
uint8 images -> [0, 1] -> bilinear resize to 299x299 (align_corners=False, no antialiasing)
-> [-1, 1] (`preprocess`) -> stem -> Mixed_5b..5d (A) -> Mixed_6a (B) -> Mixed_6b..6e (C)
-> Mixed_7a (D) -> Mixed_7b (E, average pool branch) -> Mixed_7c (E, max pool branch)
-> global average pool -> float32[B, 2048] (`InceptionV3FID`). `features_fn` wraps it all
for numpy batches. Layout is NHWC with HWIO kernels; branch outputs are concatenated on
channels in the PyTorch order, so feature i here is feature i there.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from synthjax.core import compiler
from synthjax.models.layers import conv2d
from synthjax.models.torch_checkpoints import layout_differences

Array = jax.Array
Pads = tuple[tuple[int, int], tuple[int, int]]

INPUT_SIZE = 299
FEATURES = 2048
BN_EPSILON = 1e-3  # torchvision's BasicConv2d, which pytorch-fid's port keeps
CONVERT_SCRIPT = "scripts/convert_fid_inception.py"


def _pads(ph: int, pw: int) -> Pads:
    """PyTorch's symmetric padding=(ph, pw) as explicit (lo, hi) pairs."""
    return ((ph, ph), (pw, pw))


NO_PAD = _pads(0, 0)


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (stored statistics, eps 1e-3) -> ReLU.

    Submodules are named 'conv' and 'bn' like torchvision's, so every PyTorch state_dict key
    maps onto one Flax leaf (see `load_params`).
    """

    features: int
    kernel_size: tuple[int, int]
    stride: int = 1
    padding: Pads = NO_PAD
    lowering: str = "native"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: float32[B, H, W, Cin] -> float32[B, H', W', features]."""
        x = _Conv(
            self.features, self.kernel_size, self.stride, self.padding, self.lowering, name="conv"
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


class _Conv(nn.Module):
    """A bias-free conv with an HWIO kernel named 'kernel', through `layers.conv2d`."""

    features: int
    kernel_size: tuple[int, int]
    stride: int
    padding: Pads
    lowering: str

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = self.kernel_size
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features)
        )
        return conv2d(x, kernel, stride=self.stride, padding=self.padding, lowering=self.lowering)


def max_pool_3x3(x: Array, *, stride: int, padding: int) -> Array:
    """3x3 max pooling; padded cells are -inf, as in F.max_pool2d. float[B,H,W,C] -> float."""
    pads = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=pads)


def _valid_counts(size: int, window: int, padding: int) -> np.ndarray:
    """Per output position (stride 1), how many window cells fall inside [0, size)."""
    starts = np.arange(size + 2 * padding - window + 1) - padding
    return np.minimum(starts + window, size) - np.maximum(starts, 0)


def avg_pool_3x3_exclude_pad(x: Array) -> Array:
    """3x3, stride 1, padding 1 average pool with count_include_pad=False.

    TF's average pool (and pytorch-fid's patched blocks) average only over the cells inside
    the image, so a border output is divided by 6 (edge) or 4 (corner), not 9. The counts
    depend only on the static shape, so they are a constant. float[B,H,W,C] -> same shape.
    """
    _, h, w, _ = x.shape
    total = jax.lax.reduce_window(
        x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    )
    counts = np.outer(_valid_counts(h, 3, 1), _valid_counts(w, 3, 1)).astype(np.float32)
    return total / counts[None, :, :, None]


class FIDInceptionA(nn.Module):
    """Mixed_5b/5c/5d at 35x35: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (64+64+96+pool)."""

    pool_features: int
    lowering: str = "native"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(BasicConv2d, lowering=self.lowering)
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=_pads(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=_pads(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=_pads(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(avg_pool_3x3_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a, 35x35 -> 17x17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 (384+96+Cin)."""

    lowering: str = "native"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(BasicConv2d, lowering=self.lowering)
        b3 = conv(384, (3, 3), stride=2, name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=_pads(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
        bp = max_pool_3x3(x, stride=2, padding=0)
        return jnp.concatenate([b3, bd, bp], axis=-1)


class FIDInceptionC(nn.Module):
    """Mixed_6b..6e at 17x17 with factorised 7x7 convs (192 channels per branch, 768 total)."""

    channels_7x7: int
    lowering: str = "native"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(BasicConv2d, lowering=self.lowering)
        c7 = self.channels_7x7
        row, col = ((1, 7), _pads(0, 3)), ((7, 1), _pads(3, 0))  # (kernel, padding)
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c7, row[0], padding=row[1], name="branch7x7_2")(b7)
        b7 = conv(192, col[0], padding=col[1], name="branch7x7_3")(b7)
        bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c7, col[0], padding=col[1], name="branch7x7dbl_2")(bd)
        bd = conv(c7, row[0], padding=row[1], name="branch7x7dbl_3")(bd)
        bd = conv(c7, col[0], padding=col[1], name="branch7x7dbl_4")(bd)
        bd = conv(192, row[0], padding=row[1], name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(avg_pool_3x3_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a, 17x17 -> 8x8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 (320+192+Cin)."""

    lowering: str = "native"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(BasicConv2d, lowering=self.lowering)
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), stride=2, name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=_pads(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=_pads(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        bp = max_pool_3x3(x, stride=2, padding=0)
        return jnp.concatenate([b3, b7, bp], axis=-1)


class FIDInceptionE(nn.Module):
    """Mixed_7b ('avg', FIDInceptionE_1) and Mixed_7c ('max', FIDInceptionE_2) at 8x8.

    Outputs 320 | 384+384 | 384+384 | 192 = 2048 channels. In the 2015 graph Mixed_7c's pool
    branch is a max pool (stride 1, padding 1), unlike the paper; FID depends on it.
    """

    pool: str
    lowering: str = "native"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(BasicConv2d, lowering=self.lowering)
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                conv(384, (1, 3), padding=_pads(0, 1), name="branch3x3_2a")(b3),
                conv(384, (3, 1), padding=_pads(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=_pads(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                conv(384, (1, 3), padding=_pads(0, 1), name="branch3x3dbl_3a")(bd),
                conv(384, (3, 1), padding=_pads(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        if self.pool == "avg":
            pooled = avg_pool_3x3_exclude_pad(x)
        elif self.pool == "max":
            pooled = max_pool_3x3(x, stride=1, padding=1)
        else:
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        bp = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3FID(nn.Module):
    """pytorch-fid's FID Inception-v3 up to pool3, for inference only.

    BatchNorm always uses the stored statistics (`batch_stats`); there is no train mode, no
    dropout and no classifier head. Submodule names are the PyTorch attribute names
    (Conv2d_1a_3x3, ..., Mixed_7c).
    """

    conv_lowering: str = "native"

    @nn.compact
    def __call__(self, images: Array) -> Array:
        """images: float32[B, 299, 299, 3] already resized and in [-1, 1] -> float32[B, 2048].

        The network is fully convolutional, so other sizes run too, but only 299x299 gives
        the features FID is defined on; use `preprocess` to get there.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected float[B, H, W, 3] images, got shape {images.shape}")
        low = self.conv_lowering
        conv = functools.partial(BasicConv2d, lowering=low)
        x = images.astype(jnp.float32)
        x = conv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)  # 149x149
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)  # 147x147
        x = conv(64, (3, 3), padding=_pads(1, 1), name="Conv2d_2b_3x3")(x)
        x = max_pool_3x3(x, stride=2, padding=0)  # 73x73
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)  # 71x71
        x = max_pool_3x3(x, stride=2, padding=0)  # 35x35
        x = FIDInceptionA(32, low, name="Mixed_5b")(x)  # 256 channels
        x = FIDInceptionA(64, low, name="Mixed_5c")(x)  # 288
        x = FIDInceptionA(64, low, name="Mixed_5d")(x)  # 288
        x = InceptionB(low, name="Mixed_6a")(x)  # 768 at 17x17
        x = FIDInceptionC(128, low, name="Mixed_6b")(x)
        x = FIDInceptionC(160, low, name="Mixed_6c")(x)
        x = FIDInceptionC(160, low, name="Mixed_6d")(x)
        x = FIDInceptionC(192, low, name="Mixed_6e")(x)
        x = InceptionD(low, name="Mixed_7a")(x)  # 1280 at 8x8
        x = FIDInceptionE("avg", low, name="Mixed_7b")(x)  # 2048
        x = FIDInceptionE("max", low, name="Mixed_7c")(x)  # 2048
        return jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d((1, 1)) + flatten


# ---------------------------------------------------------------------------------------------
# Preprocessing.


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of PyTorch's bilinear resize (align_corners=False) on one axis.

    Follows ATen's CPU kernel in float32: source = scale * (dst + 0.5) - 0.5 with
    scale = in / out, clamped at 0; i0 = floor(source), i1 = min(i0 + 1, in - 1) and weights
    (1 - l, l) with l = source - i0. No antialiasing filter, also when shrinking.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32)
    src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0.astype(np.int32), i1.astype(np.int32), lam


def resize_bilinear(x: Array, size: int = INPUT_SIZE) -> Array:
    """float32[B, H, W, C] -> float32[B, size, size, C], like F.interpolate(mode='bilinear',
    align_corners=False) without antialiasing. Width is interpolated first, then height, the
    nesting of ATen's kernel; a size that already matches is returned unchanged (exact there).
    """
    _, h, w, _ = x.shape
    if w != size:
        j0, j1, lw = _linear_taps(w, size)
        lw = lw[None, None, :, None]
        x = (1.0 - lw) * jnp.take(x, j0, axis=2) + lw * jnp.take(x, j1, axis=2)
    if h != size:
        i0, i1, lh = _linear_taps(h, size)
        lh = lh[None, :, None, None]
        x = (1.0 - lh) * jnp.take(x, i0, axis=1) + lh * jnp.take(x, i1, axis=1)
    return x


def preprocess(images: Array) -> Array:
    """uint8[B, H, W, C] (C = 1 or 3) -> float32[B, 299, 299, 3] in [-1, 1].

    The same steps as pytorch-fid's data path: divide by 255 (torchvision's ToTensor), tile
    grayscale to three channels (PIL's convert('RGB')), resize bilinearly to 299x299 with
    `resize_bilinear`, then map [0, 1] to [-1, 1] with 2x - 1.
    """
    images = jnp.asarray(images)
    if images.dtype != jnp.uint8:
        raise TypeError(f"preprocess expects uint8 images, got {images.dtype}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8[B, H, W, 1 or 3] images, got shape {images.shape}")
    x = images.astype(jnp.float32) / 255.0
    if x.shape[-1] == 1:
        x = jnp.tile(x, (1, 1, 1, 3))
    x = resize_bilinear(x, INPUT_SIZE)
    return 2.0 * x - 1.0


# ---------------------------------------------------------------------------------------------
# Weights.

# Last state_dict name part -> (Flax collection, leaf name) under the same module path.
_LEAVES = {
    ("conv", "weight"): ("params", "kernel"),
    ("bn", "weight"): ("params", "scale"),
    ("bn", "bias"): ("params", "bias"),
    ("bn", "running_mean"): ("batch_stats", "mean"),
    ("bn", "running_var"): ("batch_stats", "var"),
}
_TORCH_LEAF = {flax: torch for torch, flax in _LEAVES.items()}
# Bookkeeping of torch BatchNorm (an int64 step count), not used at inference.
_IGNORED_SUFFIX = ".num_batches_tracked"


def expected_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """PyTorch state_dict name -> PyTorch shape (OIHW for convs) of every tensor the model uses.

    Derived from the Flax module's own variable tree (`jax.eval_shape`, no compute), so the
    loader and the model cannot disagree. Sorted by name; 470 entries.
    """
    return dict(_expected_shapes())


@functools.lru_cache(maxsize=1)
def _expected_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    shapes = jax.eval_shape(
        InceptionV3FID().init, jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3))
    )
    out = {}
    for collection, tree in shapes.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            names = [p.key for p in path]
            module, leaf_name = names[-2], names[-1]
            torch_leaf = _TORCH_LEAF[(collection, leaf_name)][1]
            shape = tuple(leaf.shape)
            if leaf_name == "kernel":
                shape = (shape[3], shape[2], shape[0], shape[1])  # HWIO -> OIHW
            out[".".join([*names[:-2], module, torch_leaf])] = shape
    return tuple(sorted(out.items()))


def _missing_file_message(path: str) -> str:
    return (
        f"FID Inception weights not found at {path!r}. They are never downloaded: obtain "
        "pytorch-fid's pt_inception-2015-12-05 .pth checkpoint yourself, then convert it once "
        f"on any machine with PyTorch: python {CONVERT_SCRIPT} pt_inception-2015-12-05.pth {path}"
    )


def _short_list(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def load_params(path: str | os.PathLike) -> dict:
    """Flax variables {'params': ..., 'batch_stats': ...} for `InceptionV3FID` from an .npz.

    The file's keys are pytorch-fid's state_dict names ('Conv2d_1a_3x3.conv.weight',
    'Mixed_5b.branch1x1.bn.running_mean', ...), as written by scripts/convert_fid_inception.py.
    Conv kernels are converted from OIHW to HWIO; everything is cast to float32.
    '*.num_batches_tracked' entries are ignored if present.

    Raises:
      FileNotFoundError: no file at `path` (the message says how to produce it).
      ValueError: keys missing, unexpected (e.g. 'fc.weight') or of the wrong shape; the
        message names them.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(_missing_file_message(path))
    expected = expected_state_dict_shapes()
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if not k.endswith(_IGNORED_SUFFIX)}

    missing, extra, wrong = layout_differences(expected, arrays)
    problems = []
    if missing:
        problems.append(f"missing keys: {_short_list(missing)}")
    if extra:
        problems.append(f"unexpected keys: {_short_list(extra)}")
    if wrong:
        problems.append(f"wrong shapes: {_short_list(wrong)}")
    if problems:
        raise ValueError(
            f"{path} does not hold pytorch-fid's FID Inception state_dict ("
            + "; ".join(problems)
            + f"). Convert the .pth with {CONVERT_SCRIPT}."
        )

    variables: dict = {"params": {}, "batch_stats": {}}
    for name, value in arrays.items():
        *modules, owner, torch_leaf = name.split(".")
        collection, leaf = _LEAVES[(owner, torch_leaf)]
        value = np.asarray(value, dtype=np.float32)
        if leaf == "kernel":
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        node = variables[collection]
        for key in (*modules, owner):
            node = node.setdefault(key, {})
        node[leaf] = value
    return variables


def num_parameters(variables: dict) -> tuple[int, int]:
    """(number of params, number of batch statistics) in a variables dict."""
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))
    return count(variables.get("params", {})), count(variables.get("batch_stats", {}))


# ---------------------------------------------------------------------------------------------
# Batched feature extraction.


def features_fn(
    params_path: str | os.PathLike, *, batch_size: int = 50, conv_lowering: str = "native"
) -> Callable[[np.ndarray], np.ndarray]:
    """A host-side extractor: uint8[N, H, W, C] numpy (C = 1 or 3) -> float32[N, 2048] numpy.

    Loads the weights once (see `load_params`) and compiles preprocess + network once per
    image size and channel count. Images go through in batches of exactly `batch_size`: the
    last partial batch is padded with zeros and the padding rows dropped, so it reuses the
    same executable. Convolutions run at full float32 precision even on accelerators whose
    default would drop to bfloat16/TF32 passes, since FID compares against float32 numbers.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    variables = jax.device_put(load_params(params_path))
    model = InceptionV3FID(conv_lowering=conv_lowering)

    @compiler.jit
    def run(variables: dict, batch: Array) -> Array:
        with jax.default_matmul_precision("highest"):
            return model.apply(variables, preprocess(batch))

    def extract(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"expected uint8[N, H, W, 1 or 3] images, got {images.dtype}{list(images.shape)}"
            )
        n = images.shape[0]
        out = np.empty((n, FEATURES), np.float32)
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            rows = chunk.shape[0]
            if rows < batch_size:
                pad = np.zeros((batch_size - rows, *chunk.shape[1:]), np.uint8)
                chunk = np.concatenate([chunk, pad])
            out[start : start + rows] = np.asarray(run(variables, chunk))[:rows]
        return out

    return extract
