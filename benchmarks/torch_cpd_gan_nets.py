"""PyTorch port of the cpD-GAN networks (`synthjax.models.cpd_gan`), for benchmarking.

`Generator` and `Discriminator` have the same layers, parameter shapes and arithmetic as
the Flax modules, written the way a PyTorch user would (NCHW, `F.conv2d`, `F.interpolate`
for the nearest 2x upsample, `F.avg_pool2d` for the box downsample, equalized learning rate
as a run-time weight scale) rather than in the fused resampling forms of `layers.py`;
`load_jax_params` copies Flax params into them. The training step that uses them, and the
parity check against the Flax modules, are in `torch_cpd_gan.py`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthjax.models.cpd_gan import feature_maps, resolution_log2

RESAMPLING_GAIN = math.sqrt(2.0)


def pixel_norm(x: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """Unit mean square over dim 1 (channels). x: float[B, C, ...] -> same shape."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + epsilon)


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=0.2)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Appends one feature map of the minibatch stddev (one channel slice, as in the model).

    Sample i belongs to group i % (B / G), as in ProGAN/StyleGAN and `layers.minibatch_stddev`:
    viewing the batch as [G, M] puts sample g * M + m in column m.

    x: float[B, C, H, W] -> float[B, C + 1, H, W].
    """
    b, c, h, w = x.shape
    g = min(group_size, b)
    if b % g:
        raise ValueError(f"minibatch_stddev: batch {b} must be divisible by group size {g}")
    y = x.reshape(g, b // g, c, h, w)
    y = y - y.mean(dim=0)
    y = torch.sqrt(y.square().mean(dim=0) + 1e-8)  # [M, C, H, W]
    y = y.mean(dim=(1, 2, 3))  # [M]
    y = y.repeat(g)  # [B], entry i = group i % M
    return torch.cat([x, y.view(b, 1, 1, 1).expand(b, 1, h, w)], dim=1)


class EqualizedLinear(nn.Module):
    """Dense layer with equalized learning rate (lr_mul 1, as every layer of the model).

    The stored weight ~ N(0, init_scale^2) is multiplied at run time by gain / sqrt(fan_in).
    `in_chw` / `out_chw` mark an input or output that is a flattened C x H x W map: torch
    flattens it as (C, H, W) where Flax's NHWC layout flattens (H, W, C), so
    `load_jax_params` permutes the Flax kernel accordingly.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias_init: float = 0.0,
        gain: float = 1.0,
        init_scale: float = 1.0,
        in_chw: tuple[int, int, int] | None = None,
        out_chw: tuple[int, int, int] | None = None,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * init_scale)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.scale = gain / math.sqrt(in_features)
        self.in_chw, self.out_chw = in_chw, out_chw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float[B, in_features] (trailing axes are flattened) -> float[B, out_features]."""
        return F.linear(x.flatten(1), self.weight * self.scale, self.bias)


class EqualizedConv2d(nn.Module):
    """SAME conv with equalized learning rate and optional 2x resampling (NCHW, OIHW).

    resample='up': nearest 2x upsample, then the conv. resample='down': the conv, then a 2x2
    box mean, then the bias (a 1x1 kernel downsamples first: same result, 4x fewer FLOPs);
    the bias is added after resampling as in `layers.EqualizedConv2D`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,
        gain: float = 1.0,
        resample: str = "none",
    ):
        super().__init__()
        if resample not in ("none", "up", "down"):
            raise ValueError(f"resample must be 'none', 'up' or 'down', got {resample!r}")
        k = kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = gain / math.sqrt(k * k * in_channels)
        self.padding = (k - 1) // 2
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float[B, Cin, H, W] -> float[B, Cout, H', W'] (H' = H, 2H or H/2)."""
        weight = self.weight * self.scale
        if self.resample == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            return F.conv2d(x, weight, self.bias, padding=self.padding)
        if self.resample == "none":
            return F.conv2d(x, weight, self.bias, padding=self.padding)
        if weight.shape[-1] == 1:
            y = F.conv2d(F.avg_pool2d(x, 2), weight)
        else:
            y = F.avg_pool2d(F.conv2d(x, weight, padding=self.padding), 2)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


class ConditionalPixelNorm(nn.Module):
    """pixel_norm(x) * gamma(cond) + beta(cond), per sample; gamma/beta start at 1 and 0."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.gamma = EqualizedLinear(cond_dim, channels, bias_init=1.0, init_scale=0.0)
        self.beta = EqualizedLinear(cond_dim, channels, bias_init=0.0, init_scale=0.0)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: float[B, C, H, W], cond: float[B, D] -> float[B, C, H, W]."""
        scale = self.gamma(cond)[:, :, None, None]
        shift = self.beta(cond)[:, :, None, None]
        return pixel_norm(x) * scale + shift


class Generator(nn.Module):
    """Conditional skip generator: (z, labels) -> images float32[B, channels, R, R].

    Layers live in `self.layers` under the Flax module names ('4x4_dense', '8x8_conv0_up',
    ...), so `load_jax_params` maps names one to one.
    """

    def __init__(
        self,
        resolution: int,
        num_labels: int,
        channels: int = 1,
        latent_dim: int = 512,
        fmap_base: int = 16384,
        fmap_max: int = 512,
    ):
        super().__init__()
        self.resolution, self.num_labels = resolution, num_labels
        self.channels, self.latent_dim = channels, latent_dim
        self.res_log2 = resolution_log2(resolution)
        nf = lambda stage: feature_maps(stage, fmap_base, fmap_max)
        cond_dim = latent_dim + num_labels
        self.nf1 = nf(1)
        layers: dict[str, nn.Module] = {
            "4x4_dense": EqualizedLinear(cond_dim, nf(1) * 16, out_chw=(nf(1), 4, 4)),
            "4x4_dense_norm": ConditionalPixelNorm(cond_dim, nf(1)),
            "4x4_conv": EqualizedConv2d(nf(1), nf(1), 3),
            "4x4_conv_norm": ConditionalPixelNorm(cond_dim, nf(1)),
            "4x4_to_rgb": EqualizedConv2d(nf(1), channels, 1),
        }
        cin = nf(1)
        for log2 in range(3, self.res_log2 + 1):
            r, cout = f"{2**log2}x{2**log2}", nf(log2 - 1)
            layers[f"{r}_conv0_up"] = EqualizedConv2d(
                cin, cout, 3, resample="up", gain=RESAMPLING_GAIN
            )
            layers[f"{r}_conv0_norm"] = ConditionalPixelNorm(cond_dim, cout)
            layers[f"{r}_conv1"] = EqualizedConv2d(cout, cout, 3)
            layers[f"{r}_conv1_norm"] = ConditionalPixelNorm(cond_dim, cout)
            layers[f"{r}_to_rgb"] = EqualizedConv2d(cout, channels, 1)
            cin = cout
        self.layers = nn.ModuleDict(layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z: float32[B, latent_dim], labels: float32[B, num_labels] -> float32[B, C, R, R]."""
        L = self.layers
        cond = torch.cat([z, labels], dim=1)
        # Only z is normalised, as in the Flax model (labels keep their 0/1 scale).
        x = L["4x4_dense"](torch.cat([pixel_norm(z), labels], dim=1))
        x = L["4x4_dense_norm"](leaky_relu(x.view(-1, self.nf1, 4, 4)), cond)
        x = L["4x4_conv_norm"](leaky_relu(L["4x4_conv"](x)), cond)
        rgb = L["4x4_to_rgb"](x)
        for log2 in range(3, self.res_log2 + 1):
            r = f"{2**log2}x{2**log2}"
            x = L[f"{r}_conv0_norm"](leaky_relu(L[f"{r}_conv0_up"](x)), cond)
            x = L[f"{r}_conv1_norm"](leaky_relu(L[f"{r}_conv1"](x)), cond)
            rgb = F.interpolate(rgb, scale_factor=2, mode="nearest") + L[f"{r}_to_rgb"](x)
        return rgb


class Discriminator(nn.Module):
    """Conditional resnet discriminator: (images [B, C, R, R], labels [B, K]) -> scores [B]."""

    def __init__(
        self,
        resolution: int,
        num_labels: int,
        channels: int = 1,
        fmap_base: int = 16384,
        fmap_max: int = 512,
        mbstd_group_size: int = 4,
    ):
        super().__init__()
        self.resolution, self.num_labels, self.channels = resolution, num_labels, channels
        self.mbstd_group_size = mbstd_group_size
        self.res_log2 = resolution_log2(resolution)
        nf = lambda stage: feature_maps(stage, fmap_base, fmap_max)
        r = f"{resolution}x{resolution}"
        layers: dict[str, nn.Module] = {
            f"{r}_from_rgb": EqualizedConv2d(channels, nf(self.res_log2 - 1), 1)
        }
        for log2 in range(self.res_log2, 2, -1):
            r = f"{2**log2}x{2**log2}"
            cin, mid, cout = nf(log2 - 1), nf(log2 - 1), nf(log2 - 2)
            layers[f"{r}_skip"] = EqualizedConv2d(
                cin, cout, 1, bias=False, resample="down", gain=RESAMPLING_GAIN
            )
            layers[f"{r}_conv0"] = EqualizedConv2d(cin, mid, 3)
            layers[f"{r}_conv1_down"] = EqualizedConv2d(
                mid, cout, 3, resample="down", gain=RESAMPLING_GAIN
            )
        extra = 1 if mbstd_group_size > 1 else 0
        layers["4x4_conv"] = EqualizedConv2d(nf(1) + extra, nf(1), 3)
        layers["4x4_dense"] = EqualizedLinear(nf(1) * 16, nf(0), in_chw=(nf(1), 4, 4))
        layers["label_scores"] = EqualizedLinear(nf(0), max(num_labels, 1))
        self.layers = nn.ModuleDict(layers)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """images: float32[B, C, R, R], labels: float32[B, K] -> float32[B]."""
        L = self.layers
        r = f"{self.resolution}x{self.resolution}"
        x = leaky_relu(L[f"{r}_from_rgb"](images))
        for log2 in range(self.res_log2, 2, -1):
            r = f"{2**log2}x{2**log2}"
            shortcut = L[f"{r}_skip"](x)
            x = leaky_relu(L[f"{r}_conv0"](x))
            x = leaky_relu(L[f"{r}_conv1_down"](x))
            x = (x + shortcut) * (1.0 / math.sqrt(2.0))  # unit-variance residual sum
        if self.mbstd_group_size > 1:
            x = minibatch_stddev(x, self.mbstd_group_size)
        x = leaky_relu(L["4x4_conv"](x))
        x = leaky_relu(L["4x4_dense"](x))
        scores = L["label_scores"](x)
        if self.num_labels == 0:
            return scores[:, 0]
        return (scores * labels).sum(dim=1)  # projection: per-label scores, multi-hot weights


def _flatten(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for name, value in tree.items():
        if isinstance(value, dict) or hasattr(value, "items"):
            out.update(_flatten(dict(value), (*prefix, name)))
        else:
            out[(*prefix, name)] = value
    return out


def _torch_kernel(layer: nn.Module, kernel: np.ndarray) -> np.ndarray:
    """A Flax kernel in the layout of `layer.weight`."""
    if kernel.ndim == 4:  # HWIO -> OIHW
        return kernel.transpose(3, 2, 0, 1)
    fan_in, fan_out = kernel.shape
    if getattr(layer, "in_chw", None) is not None:  # input flattened (H, W, C) in Flax
        c, h, w = layer.in_chw
        return kernel.reshape(h, w, c, fan_out).transpose(3, 2, 0, 1).reshape(fan_out, fan_in)
    if getattr(layer, "out_chw", None) is not None:  # output reshaped to (H, W, C) in Flax
        c, h, w = layer.out_chw
        return kernel.reshape(fan_in, h, w, c).transpose(3, 1, 2, 0).reshape(fan_out, fan_in)
    return kernel.T


def _torch_bias(layer: nn.Module, bias: np.ndarray) -> np.ndarray:
    if getattr(layer, "out_chw", None) is not None:
        c, h, w = layer.out_chw
        return bias.reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
    return bias


@torch.no_grad()
def load_jax_params(module: Generator | Discriminator, flax_params: Any) -> None:
    """Copies Flax params (`Generator/Discriminator.init(...)['params']`) into `module`.

    Every Flax leaf must have a torch counterpart and every torch parameter must be set.
    """
    flat = _flatten(dict(flax_params))
    seen: set[str] = set()
    for path, value in flat.items():
        *layer_path, kind = path
        layer = module.layers.get_submodule(".".join(layer_path))
        array = np.asarray(value, np.float32)
        if kind == "kernel":
            target, array = layer.weight, _torch_kernel(layer, array)
            seen.add(f"layers.{'.'.join(layer_path)}.weight")
        elif kind == "bias":
            target, array = layer.bias, _torch_bias(layer, array)
            seen.add(f"layers.{'.'.join(layer_path)}.bias")
        else:
            raise KeyError(f"unexpected Flax parameter {'/'.join(path)}")
        if tuple(target.shape) != array.shape:
            raise ValueError(f"{'/'.join(path)}: torch {tuple(target.shape)} vs Flax {array.shape}")
        target.copy_(torch.from_numpy(np.array(array, dtype=np.float32)))
    missing = {name for name, _ in module.named_parameters()} - seen
    if missing:
        raise KeyError(f"torch parameters with no Flax counterpart: {sorted(missing)}")
