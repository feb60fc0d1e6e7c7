"""Numpy/Pillow image operations shared by the dataset builders and the phantoms.

Data flow: the TFDS builders (`synthjax.data.chexpert`) decode a source file, `resize_square`
it to the base resolution and `box_pyramid` it down to the stored resolution; the phantoms use
`gaussian_blur` to make their noise textures. Everything here is plain numpy + Pillow so it
runs in any process (builders, grain workers, tests) without JAX.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return n >= 1 and (n & (n - 1)) == 0


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Resizes a whole grayscale image (no crop) to `size` x `size`.

    Args:
      image: a Pillow image of any mode and shape; converted to 8-bit grayscale ("L").
      size: output side in pixels.

    Returns:
      uint8[size, size]. Pillow's resampling filters widen with the scale factor, so
      downscaling is antialiased; Lanczos keeps edges (lines, pleural margins) sharp.
    """
    gray = image.convert("L")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8)


def box_downsample_2x2(image: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block, rounded half up, in exact integer arithmetic.

    Args:
      image: uint8[H, W] or uint8[H, W, C] with even H and W.

    Returns:
      uint8[H/2, W/2] (or uint8[H/2, W/2, C]).
    """
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"2x2 box downsampling needs even sides, got {image.shape}")
    blocks = image.astype(np.uint16).reshape(height // 2, 2, width // 2, 2, *image.shape[2:])
    # Integer (sum + 2) // 4 is exact and platform independent, unlike float rounding.
    return ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)


def box_pyramid(image: np.ndarray, resolution: int) -> np.ndarray:
    """Halves a square image with `box_downsample_2x2` until its side is `resolution`.

    Each level is the box downsample of the level above, as in the study's dataset tool, so
    every stored resolution is consistent with every other.

    Args:
      image: uint8[S, S] (or uint8[S, S, C]) with S = resolution * 2**k.
      resolution: the target side, a power of two <= S.

    Returns:
      uint8[resolution, resolution] (or with the trailing channel axis).
    """
    side = image.shape[0]
    if image.shape[1] != side or side % resolution or not is_power_of_two(side // resolution):
        raise ValueError(f"cannot box-downsample {image.shape} to {resolution}x{resolution}")
    while image.shape[0] > resolution:
        image = box_downsample_2x2(image)
    return image


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D gaussian taps, float32[2 * ceil(3 sigma) + 1]."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1, dtype=np.float64) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def gaussian_blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Separable gaussian blur with reflected borders.

    Args:
      field: float32[H, W].
      sigma: standard deviation in pixels (> 0).

    Returns:
      float32[H, W].
    """
    taps = gaussian_kernel(sigma)
    radius = len(taps) // 2
    out = np.asarray(field, dtype=np.float32)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        length = out.shape[axis]
        acc = np.zeros_like(out)
        # One shifted multiply-add per tap: a few dozen vectorised passes, no Python pixels.
        for offset, weight in enumerate(taps):
            acc += weight * np.take(padded, np.arange(offset, offset + length), axis=axis)
        out = acc
    return out
