"""Layers shared by the GANs and the classifier: one convolution, resampling, normalisation.

Every convolution in `synthjax.models` goes through `conv2d`, so the lowering (XLA's native
convolution, im2col + one matmul, or a hybrid of the two) is chosen in one place, per
backend. On CPU the default is the hybrid: XLA's native stride-1 convolutions (and their
gradients) are its fastest, but the gradients of a strided convolution (dilated
convolutions) fall off its fast path, so strided convolutions go through im2col; on GPU/TPU
the native convolution is the fast path. `benchmarks/train_step.py` and
`benchmarks/conv_lowering.py` measure the choices on the machine at hand. Resampling convs
are computed in fused form at the cheaper resolution.

Data flow: `cpd_gan.Generator` / `cpd_gan.Discriminator` (GAN training, synthesis) and
`densenet.DenseNet` (TRTR/TSTR classifier, domain features) are built from these pieces.
Layout is NHWC with HWIO kernels. Parameters are always float32; `dtype` fields set the
compute dtype so a bfloat16 path can reuse the same modules.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Array = jax.Array
Dtype = Any
Padding = str | int | Sequence[tuple[int, int]]

CONV_LOWERINGS = ("native", "im2col", "hybrid")


def resolve_conv_lowering(name: str) -> str:
    """Turns a configured lowering ('auto', 'native', 'im2col', 'hybrid') into a concrete one.

    'auto' picks the hybrid on CPU (the fastest of the three there: benchmarks/README.md,
    measured with `benchmarks/train_step.py`) and the native convolution on GPU/TPU.
    """
    if name == "auto":
        return "hybrid" if jax.default_backend() == "cpu" else "native"
    if name in CONV_LOWERINGS:
        return name
    allowed = ", ".join(repr(n) for n in ("auto", *CONV_LOWERINGS))
    raise ValueError(f"unknown convolution lowering {name!r}; allowed: {allowed}")


def compute_dtype(resolution: int, dtype: Dtype, bf16_resolution: int) -> Dtype:
    """The compute dtype of a layer working at `resolution`: bfloat16 from `bf16_resolution`
    up (0 = never), else `dtype`. The GANs' mixed precision: high-resolution convolutions,
    which dominate the FLOPs, run in bfloat16 while the coarse layers, the parameters and
    the optimizer state stay float32."""
    if bf16_resolution and resolution >= bf16_resolution:
        return jnp.bfloat16
    return dtype


def _explicit_padding(
    padding: Padding, spatial: tuple[int, int], window: tuple[int, int], stride: int
) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        return list(jax.lax.padtype_to_pads(spatial, window, (stride, stride), padding.upper()))
    if isinstance(padding, int):
        return [(padding, padding), (padding, padding)]
    pads = [tuple(int(p) for p in pair) for pair in padding]
    if len(pads) != 2 or any(len(p) != 2 for p in pads):
        raise ValueError(
            f"padding must be 'SAME', 'VALID', an int or two (lo, hi) pairs, got {padding}"
        )
    return pads


def _native_conv(x: Array, kernel: Array, stride: int, pads: tuple) -> Array:
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def _patches(x: Array, kh: int, kw: int, stride: int, pads: tuple) -> Array:
    """im2col: float[B, H, W, C] -> float[B, H', W', kh * kw * C], tap (i, j) at channel
    offset (i * kw + j) * C, the row order of an HWIO kernel reshaped to [kh * kw * C, O]."""
    cin = x.shape[-1]
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    b, hp, wp, _ = x.shape
    out_h = (hp - kh) // stride + 1
    out_w = (wp - kw) // stride + 1
    taps = [
        jax.lax.slice(
            x,
            (0, i, j, 0),
            (b, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, cin),
            (1, stride, stride, 1),
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def conv2d(
    x: Array,
    kernel: Array,
    *,
    stride: int = 1,
    padding: Padding = "SAME",
    lowering: str,
) -> Array:
    """2-D convolution, no bias, through the chosen lowering.

    Args:
      x: float[B, H, W, Cin].
      kernel: float[kh, kw, Cin, Cout] (HWIO).
      stride: the same stride along H and W.
      padding: 'SAME', 'VALID', a symmetric int (as in PyTorch), or ((top, bottom),
        (left, right)).
      lowering: 'native' (lax.conv_general_dilated), 'im2col' (shifted slices concatenated
        on channels, then one matmul) or 'hybrid' (native for stride 1, im2col for strided
        convolutions); 'auto' is resolved here too.

    Returns:
      float[B, H', W', Cout] in the promoted dtype of x and kernel.
    """
    lowering = resolve_conv_lowering(lowering)
    kh, kw, cin, cout = kernel.shape
    if x.shape[-1] != cin:
        raise ValueError(f"input has {x.shape[-1]} channels, kernel expects {cin}")
    pads = tuple(
        (int(lo), int(hi)) for lo, hi in _explicit_padding(padding, x.shape[1:3], (kh, kw), stride)
    )
    if lowering == "native" or (lowering == "hybrid" and stride == 1):
        return _native_conv(x, kernel, stride, pads)
    if kh == 1 and kw == 1 and stride == 1 and all(p == (0, 0) for p in pads):
        return x @ kernel.reshape(cin, cout)
    return _patches(x, kh, kw, stride, pads) @ kernel.reshape(kh * kw * cin, cout)


def upsample_2x(x: Array) -> Array:
    """Nearest-neighbour upsampling. x: float[B, H, W, C] -> float[B, 2H, 2W, C]."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


def upsample_2x_smooth(x: Array) -> Array:
    """Bilinear 2x upsampling (half-pixel centres, edges replicated): the separable
    [1, 3, 3, 1] / 4 filter of StyleGAN2's skip generator. Unlike nearest-neighbour it
    leaves no blocks of the coarse level in the image. x: float[B, H, W, C] -> [B, 2H, 2W, C].
    """

    def along(x: Array, axis: int) -> Array:
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (1, 1)
        p = jnp.pad(x, pad, mode="edge")
        prev = jax.lax.slice_in_dim(p, 0, n, axis=axis)
        here = jax.lax.slice_in_dim(p, 1, n + 1, axis=axis)
        nxt = jax.lax.slice_in_dim(p, 2, n + 2, axis=axis)
        even, odd = 0.75 * here + 0.25 * prev, 0.75 * here + 0.25 * nxt
        out = jnp.stack([even, odd], axis=axis + 1)
        shape = list(x.shape)
        shape[axis] = 2 * n
        return out.reshape(shape)

    return along(along(x, 1), 2)


def downsample_2x(x: Array) -> Array:
    """2x2 box-filter (mean) downsampling. x: float[B, H, W, C] -> float[B, H/2, W/2, C]."""
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"downsample_2x needs even height and width, got {h}x{w}")
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def pixel_norm(x: Array, epsilon: float = 1e-8) -> Array:
    """Scales each feature vector to unit mean square. x: float[..., C] -> same shape, dtype.

    The mean square is taken in float32 so a bfloat16 activation keeps an accurate scale.
    """
    mean_square = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(mean_square + epsilon).astype(x.dtype)


def minibatch_stddev(
    x: Array, group_size: int = 4, num_features: int = 1, num_batches: int = 1
) -> Array:
    """Appends the minibatch standard deviation as extra feature maps (StyleGAN).

    Samples are split into groups of G = min(group_size, B); as in ProGAN/StyleGAN, sample i
    belongs to group i % (B / G). Per group and channel slice, the (biased) stddev over the
    group members is averaged over channels and pixels and broadcast back to every member.

    Args:
      x: float[B, H, W, C]; B must be divisible by G and C by num_features.
      group_size: upper bound on the group size.
      num_features: number of channel slices, one appended feature map each.
      num_batches: x stacks this many minibatches of B / num_batches along the batch axis
        (e.g. reals then fakes, so the discriminator sees both in one pass); each gets its
        own statistics, exactly as if it went through alone.

    Returns:
      float[B, H, W, C + num_features].
    """
    if num_batches > 1:
        b, h, w, c = x.shape
        parts = x.reshape(num_batches, b // num_batches, h, w, c)
        out = jax.vmap(lambda part: minibatch_stddev(part, group_size, num_features))(parts)
        return out.reshape(b, h, w, c + num_features)
    b, h, w, c = x.shape
    g = min(group_size, b)
    if b % g or c % num_features:
        raise ValueError(
            f"minibatch_stddev: batch {b} must be divisible by group size {g} and "
            f"channels {c} by num_features {num_features}"
        )
    y = x.astype(jnp.float32).reshape(g, b // g, h, w, num_features, c // num_features)
    y = y - y.mean(axis=0)
    y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)  # [M, H, W, n, c]
    y = y.mean(axis=(1, 2, 4))  # [M, n]
    y = jnp.tile(y, (g, 1)).astype(x.dtype)  # [B, n], row i = group i % M
    y = jnp.broadcast_to(y[:, None, None, :], (b, h, w, num_features))
    return jnp.concatenate([x, y], axis=-1)


def _box_downsampling_kernel(kernel: Array) -> Array:
    """[k, k, I, O] -> [k+1, k+1, I, O]: a k x k conv then 2x2 box mean, as one kernel."""
    padded = [
        jnp.pad(kernel, ((a, 1 - a), (b, 1 - b), (0, 0), (0, 0))) for a in (0, 1) for b in (0, 1)
    ]
    return 0.25 * sum(padded)


def _nearest_upsampling_phases(kernel: Array) -> list[tuple[int, Array, list[tuple[int, int]]]]:
    """Splits 'nearest 2x upsample, then k x k SAME conv' into four convs at low resolution.

    Output pixel (2i + a, 2j + b) only sees low-resolution rows i + d with d in a small range
    per phase a (two rows for k = 3), so each phase (a, b) is a small conv whose kernel sums
    the taps that fall on the same low-resolution pixel. Returns (phase index, kernel,
    explicit padding) per phase.
    """
    k = kernel.shape[0]
    p = (k - 1) // 2

    def binning(a: int) -> tuple[np.ndarray, tuple[int, int]]:
        offsets = [(a + u - p) // 2 for u in range(k)]
        lo, hi = offsets[0], offsets[-1]
        m = np.zeros((hi - lo + 1, k), np.float32)
        for u, d in enumerate(offsets):
            m[d - lo, u] = 1.0
        return m, (-lo, hi)

    phases = []
    for a in (0, 1):
        rows, pad_h = binning(a)
        for b in (0, 1):
            cols, pad_w = binning(b)
            phase_kernel = jnp.einsum(
                "ru,cv,uvio->rcio", rows.astype(kernel.dtype), cols.astype(kernel.dtype), kernel
            )
            phases.append((2 * a + b, phase_kernel, [pad_h, pad_w]))
    return phases


def resampled_conv2d(x: Array, kernel: Array, *, resample: str, lowering: str) -> Array:
    """A SAME conv with optional 2x resampling, computed at the cheaper resolution.

    'up' equals `conv2d(upsample_2x(x), kernel)` and 'down' equals
    `downsample_2x(conv2d(x, kernel))` to float tolerance, at about 4/9 of the FLOPs for a
    3x3 kernel (the fused forms of ProGAN's upscale2d_conv2d / conv2d_downscale2d).

    Args:
      x: float[B, H, W, Cin].
      kernel: float[k, k, Cin, Cout], k odd.
      resample: 'none', 'up' or 'down'.
      lowering: as in `conv2d`.

    Returns:
      float[B, H', W', Cout] with H' = H, 2H or H/2.
    """
    k = kernel.shape[0]
    if resample == "none":
        return conv2d(x, kernel, lowering=lowering)
    if resample == "down":
        if k == 1:
            return conv2d(downsample_2x(x), kernel, lowering=lowering)
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"'down' needs even height and width, got {x.shape[1:3]}")
        p = (k - 1) // 2
        return conv2d(x, _box_downsampling_kernel(kernel), stride=2, padding=p, lowering=lowering)
    if resample == "up":
        if k == 1:
            return upsample_2x(conv2d(x, kernel, lowering=lowering))
        b, h, w, _ = x.shape
        outs = [None] * 4
        for index, phase_kernel, pads in _nearest_upsampling_phases(kernel):
            outs[index] = conv2d(x, phase_kernel, padding=pads, lowering=lowering)
        y = jnp.stack(
            [jnp.stack(outs[0:2], axis=3), jnp.stack(outs[2:4], axis=3)], axis=2
        )  # [B, H, 2, W, 2, C]
        return y.reshape(b, 2 * h, 2 * w, -1)
    raise ValueError(f"resample must be 'none', 'up' or 'down', got {resample!r}")


class EqualizedDense(nn.Module):
    """Dense layer with equalized learning rate (ProGAN/StyleGAN).

    The stored weight is drawn from N(0, (init_scale / lr_mul)^2) and multiplied at run time
    by gain * lr_mul / sqrt(fan_in), so Adam's per-parameter steps are the same relative size
    for every layer. The stored bias is multiplied by lr_mul; it is stored as
    bias_init / lr_mul so the effective initial bias is `bias_init`.

    init_scale = 0 starts the layer at exactly its bias (used for the generator's conditional
    pixel-norm gains), while gradients still reach the weights.
    """

    features: int
    lr_mul: float = 1.0
    use_bias: bool = True
    bias_init: float = 0.0
    gain: float = 1.0
    init_scale: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: float[B, Din] (trailing axes are flattened) -> dtype[B, features]."""
        x = x.reshape(x.shape[0], -1)
        fan_in = x.shape[-1]
        kernel = self.param(
            "kernel",
            nn.initializers.normal(self.init_scale / self.lr_mul),
            (fan_in, self.features),
            jnp.float32,
        )
        scale = self.gain * self.lr_mul / np.sqrt(fan_in)
        y = x.astype(self.dtype) @ (kernel * scale).astype(self.dtype)
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.initializers.constant(self.bias_init / self.lr_mul),
                (self.features,),
                jnp.float32,
            )
            y = y + (bias * self.lr_mul).astype(self.dtype)
        return y


class EqualizedConv2D(nn.Module):
    """Conv layer with equalized learning rate, optional 2x resampling, through `conv2d`.

    Same weight scaling as `EqualizedDense` with fan_in = k * k * Cin. With resample='down'
    the bias is added after downsampling; 'up' upsamples (nearest) before the conv; both are
    computed in fused form (see `resampled_conv2d`).
    """

    features: int
    kernel_size: int
    lr_mul: float = 1.0
    use_bias: bool = True
    lowering: str = "native"
    gain: float = 1.0
    resample: str = "none"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: float[B, H, W, Cin] -> dtype[B, H', W', features] (H' = H, 2H or H/2)."""
        k = self.kernel_size
        cin = x.shape[-1]
        kernel = self.param(
            "kernel",
            nn.initializers.normal(1.0 / self.lr_mul),
            (k, k, cin, self.features),
            jnp.float32,
        )
        scale = self.gain * self.lr_mul / np.sqrt(k * k * cin)
        y = resampled_conv2d(
            x.astype(self.dtype),
            (kernel * scale).astype(self.dtype),
            resample=self.resample,
            lowering=self.lowering,
        )
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + (bias * self.lr_mul).astype(self.dtype)
        return y


class Conv(nn.Module):
    """Standard conv through `conv2d`, for the classifier and the dcgan.

    Initialised like torchvision's DenseNet by default (kaiming_normal_: N(0, 2 / fan_in),
    untruncated); `kernel_init` replaces it.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: Padding = "SAME"
    use_bias: bool = False
    lowering: str = "native"
    dtype: Dtype = jnp.float32
    kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: float[B, H, W, Cin] -> dtype[B, H', W', features]."""
        k = self.kernel_size
        kernel = self.param(
            "kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32
        )
        y = conv2d(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            stride=self.stride,
            padding=self.padding,
            lowering=self.lowering,
        )
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


# ---- shared by the generators and discriminators


class GanNetwork(nn.Module):
    """The fields every generator and discriminator has: the images it makes or reads
    (resolution x resolution x channels, conditioned on num_labels labels), its widths
    (fmap_base halved per doubling of the side, at most fmap_max), and how it computes."""

    resolution: int
    num_labels: int
    channels: int = 1
    fmap_base: int = 16384
    fmap_max: int = 512
    conv_lowering: str = "native"
    dtype: Dtype = jnp.float32


def check_latent_and_labels(z: Array, labels: Array, latent_dim: int, num_labels: int) -> None:
    """A generator's input check: z float32[B, latent_dim], labels float32[B, num_labels]."""
    if z.shape[-1] != latent_dim or labels.shape[-1] != num_labels:
        raise ValueError(
            f"expected z [B, {latent_dim}] and labels [B, {num_labels}], "
            f"got {z.shape} and {labels.shape}"
        )


def check_images_and_labels(
    images: Array, labels: Array, resolution: int, channels: int, num_labels: int
) -> None:
    """A discriminator's input check: images [B, R, R, C] at its resolution, labels [B, K]."""
    expected = (resolution, resolution, channels)
    if tuple(images.shape[1:]) != expected or labels.shape[-1] != num_labels:
        raise ValueError(
            f"expected images [B, {', '.join(map(str, expected))}] and labels "
            f"[B, {num_labels}], got {images.shape} and {labels.shape}"
        )


def count_params(params: Any) -> int:
    """Number of scalars in a pytree of arrays or `jax.ShapeDtypeStruct`s."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


def gan_param_counts(
    generator: nn.Module, discriminator: nn.Module, **init_kwargs: Any
) -> tuple[int, int]:
    """(generator, discriminator) parameter counts from shapes only (`jax.eval_shape`), so
    even 1024x1024 takes a second. `init_kwargs` go to both `init`s (e.g. build_all)."""
    key = jax.random.key(0)
    z = jax.ShapeDtypeStruct((4, generator.latent_dim), jnp.float32)
    y = jax.ShapeDtypeStruct((4, generator.num_labels), jnp.float32)
    side, channels = discriminator.resolution, discriminator.channels
    x = jax.ShapeDtypeStruct((4, side, side, channels), jnp.float32)
    g_params = jax.eval_shape(lambda z, y: generator.init(key, z, y, **init_kwargs), z, y)
    d_params = jax.eval_shape(lambda x, y: discriminator.init(key, x, y, **init_kwargs), x, y)
    return count_params(g_params), count_params(d_params)
