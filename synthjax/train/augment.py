"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data"): differentiable augmentations and the rule that
adapts their strength.

Data flow, inside the jitted GAN train step: real images and generated images each go
through `augment` -> discriminator. Every augmentation is applied to every sample
independently with probability `p`; because each is skipped with probability 1 - p, the
augmented distribution still pins down the clean one, so G is not pushed to produce
augmented-looking images (the paper's "non-leaking" condition, met for p below ~0.8).
`p` is a traced float32 scalar kept in the GAN state (checkpointed); the train step
(`adapt_augmentation`) averages sign(D(real)) over the images seen since the last
adjustment and calls `update_strength` every few steps, which nudges p up while D is
overconfident on reals (r_t above the target, 0.6 in the paper) and down otherwise.

The pipeline is a simplified version of the paper's "bgc" set: an optional x-flip, then
integer translation, small rotation and isotropic scaling composed into one affine map
resampled once (bilinear, mirror-reflected borders), then brightness, contrast and cutout.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.scipy.special import erfinv

from synthjax.train import recipes

AUGMENTATIONS: tuple[str, ...] = (
    "xflip",
    "translate",
    "rotate",
    "scale",
    "brightness",
    "contrast",
    "cutout",
)
# No xflip: chest X-rays are not mirror-symmetric (heart on the left, gastric bubble...).
DEFAULT_AUGMENTATIONS = "translate,rotate,scale,brightness,contrast,cutout"

TRANSLATE_MAX = 0.125  # fraction of the image size, per axis
# Medical images have a canonical orientation, so only small rotations (the paper rotates
# freely).
ROTATE_MAX_DEGREES = 10.0
SCALE_LOG2_STD = 0.2
BRIGHTNESS_STD = 0.2  # in image units; images span [-1, 1]
CONTRAST_LOG2_STD = 0.5
CUTOUT_SIZE = 0.5  # side of the square, as a fraction of the image size

_GEOMETRIC = ("translate", "rotate", "scale")
_DRAWS = 3  # uniforms per sample and augmentation: the gate and up to two parameters
# Largest float32 above -1: erfinv(-1) would be -inf.
_OPEN_MINUS_ONE = float(np.nextafter(np.float32(-1), np.float32(0)))


def parse_augmentations(spec: str) -> tuple[str, ...]:
    """'translate,rotate' -> ('translate', 'rotate'), in AUGMENTATIONS order, de-duplicated.

    Whitespace around names and empty entries are ignored, so '' -> (). Unknown names raise
    ValueError naming the bad entry and listing the known ones.
    """
    names = [name.strip() for name in spec.split(",")]
    for name in names:
        if name and name not in AUGMENTATIONS:
            raise ValueError(
                f"unknown augmentation {name!r} in {spec!r}; known: {', '.join(AUGMENTATIONS)}"
            )
    return tuple(name for name in AUGMENTATIONS if name in names)


def _normal(u: jax.Array) -> jax.Array:
    """Uniforms in [0, 1) -> standard normals, as jax.random.normal does it."""
    return np.sqrt(2.0) * erfinv(jnp.maximum(2.0 * u - 1.0, _OPEN_MINUS_ONE))


def _mirror(index: jax.Array, size: int) -> jax.Array:
    """Integer indices -> [0, size), reflected about the edge pixels (d c b | a b c d | c b a)."""
    period = 2 * (size - 1)
    index = jnp.mod(index, period)
    return jnp.where(index >= size, period - index, index)


def _bilinear(images: jax.Array, ys: jax.Array, xs: jax.Array) -> jax.Array:
    """Samples images[b] at (ys[b], xs[b]) bilinearly, mirror-reflecting outside the image.

    images: float32[B, H, W, C]; ys, xs: float32[B, H', W'] in pixel coordinates.
    Returns float32[B, H', W', C]. At integer coordinates the weights are exactly 0 and 1,
    so pixels are reproduced bit for bit.
    """
    _, h, w, _ = images.shape
    y0 = jnp.floor(ys)
    x0 = jnp.floor(xs)
    wy = (ys - y0)[..., None]
    wx = (xs - x0)[..., None]
    y0 = y0.astype(jnp.int32)
    x0 = x0.astype(jnp.int32)
    iy0, iy1 = _mirror(y0, h), _mirror(y0 + 1, h)
    ix0, ix1 = _mirror(x0, w), _mirror(x0 + 1, w)
    gather = jax.vmap(lambda image, iy, ix: image[iy, ix])
    top = gather(images, iy0, ix0) * (1.0 - wx) + gather(images, iy0, ix1) * wx
    bottom = gather(images, iy1, ix0) * (1.0 - wx) + gather(images, iy1, ix1) * wx
    return top * (1.0 - wy) + bottom * wy


def _geometric(
    images: jax.Array, tx: jax.Array, ty: jax.Array, angle: jax.Array, scale: jax.Array
) -> jax.Array:
    """Scales by `scale`, rotates by `angle` (radians) about the centre, then shifts by
    (tx, ty) pixels, all in one resampling pass.

    images: float32[B, H, W, C]; tx, ty, angle, scale: float32[B].
    Returns float32[B, H, W, C].
    """
    _, h, w, _ = images.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    grid_y, grid_x = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )

    def per_sample(v: jax.Array) -> jax.Array:
        return v[:, None, None]

    # Inverse map: output pixel -> source position. With angle 0 and scale 1 every term is
    # an exact integer or half-integer, so pure integer shifts sample exactly on pixels.
    dx = grid_x - cx - per_sample(tx)
    dy = grid_y - cy - per_sample(ty)
    cos, sin, inv_scale = per_sample(jnp.cos(angle)), per_sample(jnp.sin(angle)), 1.0 / scale
    src_x = cx + per_sample(inv_scale) * (cos * dx + sin * dy)
    src_y = cy + per_sample(inv_scale) * (cos * dy - sin * dx)
    return _bilinear(images, src_y, src_x)


def augment(
    images: jax.Array, key: jax.Array, p: jax.Array, *, augmentations: tuple[str, ...]
) -> jax.Array:
    """Applies each listed augmentation to each sample independently with probability p.

    images: float32[B, H, W, C] in [-1, 1] (NHWC); outputs are not clipped, so brightness and
        contrast may leave that range (clipping would cut the generator's gradients).
    key: a jax.random key. p: float32[] in [0, 1], may be traced (one compilation for all p).
    augmentations: static names from AUGMENTATIONS (e.g. `parse_augmentations(...)`);
        they are applied in AUGMENTATIONS order whatever order they are given in.
    Returns float32[B, H, W, C]. Differentiable w.r.t. `images`; a sample whose gates are
    all closed (always, when p == 0) is returned bit for bit.
    """
    if isinstance(augmentations, str):
        raise TypeError("augmentations must be a tuple of names; use parse_augmentations(spec)")
    unknown = sorted(set(augmentations) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentations {unknown}; known: {', '.join(AUGMENTATIONS)}")
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    images = jnp.asarray(images)
    b, h, w, _ = images.shape
    p = jnp.asarray(p, jnp.float32)
    # One key per known augmentation, so enabling one leaves the draws of the others intact.
    # All draws come from one batched, flat uniform call: threefry is slow to compile and
    # multi-dimensional draws even more so, and this runs inside every train step.
    keys = jax.random.split(key, len(AUGMENTATIONS))
    draws = jax.vmap(lambda k: jax.random.uniform(k, (_DRAWS * b,)).reshape(_DRAWS, b))(keys)

    def draw(name: str) -> tuple[jax.Array, jax.Array]:
        """(gate bool[B], parameter uniforms float32[_DRAWS - 1, B] in [0, 1))."""
        u = draws[AUGMENTATIONS.index(name)]
        return u[0] < p, u[1:]

    def per_sample(v: jax.Array) -> jax.Array:
        return v[:, None, None, None]

    # Each step keeps closed-gate samples via `where` rather than identity parameters, so
    # they come back bit-identical even where the arithmetic would round (e.g. contrast).
    x = images
    if "xflip" in augmentations:
        gate, _ = draw("xflip")
        x = jnp.where(per_sample(gate), x[:, :, ::-1], x)

    if any(name in augmentations for name in _GEOMETRIC):
        zeros, ones = jnp.zeros((b,), jnp.float32), jnp.ones((b,), jnp.float32)
        moved = jnp.zeros((b,), jnp.bool_)
        tx, ty, angle, scale = zeros, zeros, zeros, ones
        if "translate" in augmentations:
            gate, u = draw("translate")
            t = (2.0 * u - 1.0) * TRANSLATE_MAX
            tx = jnp.where(gate, jnp.round(t[0] * w), 0.0)
            ty = jnp.where(gate, jnp.round(t[1] * h), 0.0)
            moved |= gate
        if "rotate" in augmentations:
            gate, u = draw("rotate")
            angle = jnp.where(gate, (2.0 * u[0] - 1.0) * np.radians(ROTATE_MAX_DEGREES), 0.0)
            moved |= gate
        if "scale" in augmentations:
            gate, u = draw("scale")
            scale = jnp.where(gate, jnp.exp2(_normal(u[0]) * SCALE_LOG2_STD), 1.0)
            moved |= gate
        x = jnp.where(per_sample(moved), _geometric(x, tx, ty, angle, scale).astype(x.dtype), x)

    if "brightness" in augmentations:
        gate, u = draw("brightness")
        offset = _normal(u[0]) * BRIGHTNESS_STD
        x = jnp.where(per_sample(gate), x + per_sample(offset).astype(x.dtype), x)

    if "contrast" in augmentations:
        gate, u = draw("contrast")
        factor = jnp.exp2(_normal(u[0]) * CONTRAST_LOG2_STD).astype(x.dtype)
        mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
        x = jnp.where(per_sample(gate), mean + (x - mean) * per_sample(factor), x)

    if "cutout" in augmentations:
        gate, (cy, cx) = draw("cutout")
        # Pixel centres in [0, 1]; the square may hang over the border and is clipped there.
        ys = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
        xs = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
        inside_y = jnp.abs(ys[None, :] - cy[:, None]) < CUTOUT_SIZE / 2
        inside_x = jnp.abs(xs[None, :] - cx[:, None]) < CUTOUT_SIZE / 2
        cut = gate[:, None, None] & inside_y[:, :, None] & inside_x[:, None, :]
        x = jnp.where(cut[..., None], jnp.zeros((), x.dtype), x)

    return x


def update_strength(
    p: jax.Array,
    real_sign_mean: jax.Array,
    *,
    target: float,
    images_per_update: int,
    speed_kimg: float,
) -> jax.Array:
    """One ADA adjustment of the augmentation probability.

    p: float32[], the current probability. real_sign_mean: float32[], the mean of
    sign(D(real)) over the images seen since the last adjustment (the overfitting heuristic
    r_t). Returns float32[]: p + sign(r_t - target) * images_per_update / (speed_kimg * 1000),
    clipped to [0, 1], so p can sweep 0 -> 1 in `speed_kimg` thousand images (the paper uses
    target 0.6, 500 kimg, an update every 4 steps). A NaN r_t (no images counted) leaves p
    unchanged instead of making it NaN for the rest of training. Pure jnp (works under jit).
    """
    if images_per_update <= 0 or speed_kimg <= 0:
        raise ValueError(
            f"images_per_update ({images_per_update}) and speed_kimg ({speed_kimg}) must be > 0"
        )
    r_t = jnp.asarray(real_sign_mean, jnp.float32)
    direction = jnp.where(jnp.isnan(r_t), 0.0, jnp.sign(r_t - target))
    step = images_per_update / (speed_kimg * 1000.0)
    return jnp.clip(jnp.asarray(p, jnp.float32) + direction * step, 0.0, 1.0)


# --- the feedback loop, one step of it -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AdaSettings:
    """ADA's static settings in the GAN step (hashable). `midpoint`: r_t's centre is the
    midpoint of the real and fake scores, not 0 (see `adapt_augmentation`)."""

    enabled: bool
    augmentations: tuple[str, ...]
    target: float
    interval: int
    speed_kimg: float
    midpoint: bool

    @classmethod
    def from_config(cls, gan: ml_collections.ConfigDict) -> AdaSettings:
        return cls(
            enabled=gan.ada.enabled,
            augmentations=parse_augmentations(gan.ada.augmentations),
            target=gan.ada.target,
            interval=gan.ada.interval,
            speed_kimg=gan.ada.speed_kimg,
            midpoint=ada_center(gan) == "midpoint",
        )


ADA_CENTERS = ("auto", "zero", "midpoint")  # what E[sign(D(real) - center)] is taken about


def ada_center(gan: ml_collections.ConfigDict) -> str:
    """`gan.ada.center` resolved: 'auto' is 'midpoint' under WGAN-GP, 'zero' otherwise."""
    if gan.ada.center != "auto":
        return gan.ada.center
    return "midpoint" if recipes.resolve(gan).loss == "wgan_gp" else "zero"


def adapt_augmentation(
    p: jax.Array,
    signs: jax.Array,
    count: jax.Array,
    real_scores: jax.Array,
    step: jax.Array,
    center: jax.Array | float = 0.0,
    *,
    target: float,
    interval: int,
    speed_kimg: float,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """ADA's feedback loop, one step of it: accumulate sign(D(real) - center); after every
    `interval` steps move p by sign(r_t - target) * images / (speed_kimg * 1000) (Karras et
    al. 2020).

    real_scores: float32[B], D's outputs on this step's (augmented) reals. center: where D's
    scale says "undecided": 0 for a logistic D (ADA's own heuristic); for a WGAN critic, whose
    offset is arbitrary, the midpoint of this step's mean real and mean fake scores. Returns
    the new (p, signs, count) and r_t = E[sign(D(real) - center)] over the images seen since
    the last move.
    """
    signs = signs + jnp.sum(jnp.sign(real_scores - center))
    count = count + real_scores.shape[0]
    rt = signs / jnp.maximum(count, 1.0)
    adjust = (step + 1) % interval == 0
    moved = update_strength(
        p,
        rt,
        target=target,
        images_per_update=real_scores.shape[0] * interval,
        speed_kimg=speed_kimg,
    )
    return (
        jnp.where(adjust, moved, p),
        jnp.where(adjust, 0.0, signs),
        jnp.where(adjust, 0.0, count),
        rt,
    )
