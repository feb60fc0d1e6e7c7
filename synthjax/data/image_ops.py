"""Numpy/Pillow image operations shared by the dataset builders and the phantoms.

Data flow: the builders (`synthjax.data.chexpert`, `folder`, `rsna_ich`) decode a source file
(`stretch`, `pad_to_square` for arbitrary images), `resize_square` it to the base resolution
and `box_pyramid` it down to the stored resolution; the phantoms use `gaussian_blur` to make
their noise textures. Everything here is plain numpy + Pillow so it
runs in any process (builders, grain workers, tests) without JAX.
"""

from __future__ import annotations

import numpy as np
from etils import epath
from PIL import Image


def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return n >= 1 and (n & (n - 1)) == 0


def resize_square(
    image: Image.Image | np.ndarray, size: int, *, exact_box: bool = False
) -> np.ndarray:
    """Resizes a whole image (no crop) to `size` x `size`: the one resize of every builder.

    Args:
      image: a Pillow image of any mode and shape, converted to 8-bit grayscale ("L") and
        resized in Pillow's 8-bit arithmetic (JPEG/PNG sources); or display values
        float32[H, W] / float32[H, W, C] in 0..255, each channel resized in float and
        rounded once at the end (windowed DICOM, wide PNGs), so no 8-bit rounding happens
        before the resize.
      size: output side in pixels.
      exact_box: for float values of a square side that `size` divides, take the mean of
        each block instead (exact, several times faster, and the filter the pyramid
        continues with: RSNA's 512 to a base of 256).

    Returns:
      uint8[size, size] (float input keeps its channel axis: uint8[size, size, C]). Pillow's
      resampling filters widen with the scale factor, so downscaling is antialiased; Lanczos
      keeps edges (lines, pleural margins) sharp.
    """
    if isinstance(image, Image.Image):
        gray = image.convert("L")
        if gray.size != (size, size):
            gray = gray.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(gray, dtype=np.uint8)
    if image.ndim == 3:
        channels = [
            resize_square(image[:, :, c], size, exact_box=exact_box) for c in range(image.shape[2])
        ]
        return np.stack(channels, axis=-1)
    side = image.shape[0]
    if exact_box and image.shape[0] == image.shape[1] and side > size and side % size == 0:
        f = side // size
        image = image.reshape(size, f, size, f).mean(axis=(1, 3))
    elif image.shape != (size, size):
        resized = Image.fromarray(np.ascontiguousarray(image, np.float32), mode="F").resize(
            (size, size), Image.Resampling.LANCZOS
        )
        image = np.asarray(resized, np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def pad_to_square(display: np.ndarray) -> np.ndarray:
    """float32[H, W, C] centred on a black float32[S, S, C], S = max(H, W).

    Black after windowing, for every modality (`dicom.pad_square` pads CT with air before
    windowing, which would skew a min..max stretch of other modalities).
    """
    height, width = display.shape[:2]
    if height == width:
        return display
    side = max(height, width)
    out = np.zeros((side, side, display.shape[2]), np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    out[top : top + height, left : left + width] = display
    return out


def stretch(values: np.ndarray) -> np.ndarray:
    """The image's own min..max -> 0..255, float32 (a constant image becomes 0)."""
    values = values.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.zeros_like(values)
    return (values - np.float32(low)) * np.float32(255.0 / (high - low))


def load_pyramid(file: epath.Path, base_resolution: int, resolution: int) -> np.ndarray:
    """Decodes an image, resizes it to the base resolution, box-downsamples it.

    Returns uint8[resolution, resolution]. For large JPEGs (the full CheXpert download),
    `draft` lets libjpeg decode directly at a power-of-two reduction that is still at least
    the base size: several times faster, and no coarser than the resize that follows.
    """
    with file.open("rb") as f:
        image = Image.open(f)
        image.draft("L", (base_resolution, base_resolution))
        base = resize_square(image, base_resolution)
    return box_pyramid(base, resolution)


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
