"""Image grids as PNG files: conditional GAN samples, one row per label combination.

The GAN stage writes `DIR/gan/samples/step_<N>.png` with `save_image_grid` while training,
and the report uses the same function for real-vs-synthetic figures. Only pixels and label
names go into a grid: never patient ids, file names or DICOM metadata.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synthjax.core.workdir import write_atomic

_GUTTER = 2  # px between cells and around the grid
_PAD = 4  # px around text
_MAX_ROW_TITLE_CHARS = 32
_BACKGROUND = 255
_INK = 0


def _truncate(text: str, max_len: int) -> str:
    if len(text) <= max_len:
        return text
    return text[: max(max_len - 3, 0)] + "..."


def label_combination_name(labels: Any, names: Sequence[str], max_len: int = 40) -> str:
    """Readable name of a multi-hot label vector, e.g. 'Cardiomegaly+Edema', or 'none'.

    Args:
      labels: float[K] multi-hot; entries above 0.5 count as present.
      names: the K label names.
      max_len: longer names are cut and end in '...'.
    """
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if labels.size != len(names):
        raise ValueError(f"{labels.size} labels but {len(names)} names")
    present = [name for name, value in zip(names, labels, strict=True) if value > 0.5]
    return _truncate("+".join(present) if present else "none", max_len)


def _font(size: int | None) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font; sized when this Pillow supports it (10.1+ with FreeType)."""
    if size is not None:
        try:
            return ImageFont.load_default(size=size)
        except (TypeError, ImportError):
            pass
    return ImageFont.load_default()


def _text_size(font: Any, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return math.ceil(right - left), math.ceil(bottom - top)


def _draw_text(draw: ImageDraw.ImageDraw, font: Any, text: str, x: int, center_y: float) -> None:
    """Draws `text` with its left edge at x, vertically centred on center_y."""
    left, top, _, bottom = font.getbbox(text)
    draw.text((x - left, round(center_y - (top + bottom) / 2)), text, font=font, fill=_INK)


def display_channels(images: np.ndarray) -> np.ndarray:
    """The channels a picture can show: 1 or 3 unchanged, otherwise the middle slice's.

    CT with neighbouring slices stacks (2k+1) slices x w windows as channels, slice-major;
    its middle block (the slice itself) is shown: its 3 windows as RGB, or its one window
    as grayscale.
    """
    channels = images.shape[-1]
    if channels in (1, 3):
        return images
    if channels % 3 == 0:
        middle = (channels // 3) // 2
        return images[..., 3 * middle : 3 * middle + 3]
    return images[..., channels // 2 : channels // 2 + 1]


def save_image_grid(
    path: str | os.PathLike,
    images: np.ndarray,
    *,
    row_titles: Sequence[str] | None = None,
    title: str | None = None,
    min_cell: int = 64,
    footer: str | None = None,
) -> None:
    """Writes a PNG grid of images, rows titled on the left.

    Args:
      path: output file; parent directories are created; written atomically.
      images: uint8[R, C, H, W, ch]; row r holds the samples of row_titles[r]. ch = 1 is
        grayscale, 3 is RGB (for CT: the brain, subdural and bone windows as red, green
        and blue); other channel counts are reduced by `display_channels`.
      row_titles: R short names (longer ones are cut), e.g. from `label_combination_name`.
      title: optional line above the grid.
      min_cell: cells are upscaled by an integer factor (nearest neighbour) until both
        sides are at least this many pixels, so 32x32 samples stay visible.
      footer: optional line below the grid, e.g. an attribution or the step.
    """
    images = np.asarray(images)
    if images.ndim != 5 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8[R, C, H, W, ch]; got {images.dtype}{list(images.shape)}"
        )
    images = display_channels(images)
    rows, cols, height, width, channels = images.shape
    if row_titles is not None and len(row_titles) != rows:
        raise ValueError(f"{len(row_titles)} row titles for {rows} rows")

    text_font, title_font = _font(None), _font(14)
    scale = max(1, math.ceil(min_cell / min(height, width)))
    cell_h, cell_w = height * scale, width * scale
    grid_h = rows * cell_h + (rows - 1) * _GUTTER
    grid_w = cols * cell_w + (cols - 1) * _GUTTER

    titles = [_truncate(t, _MAX_ROW_TITLE_CHARS) for t in row_titles or []]
    title_col_w = 0
    if titles:
        title_col_w = max(_text_size(text_font, t)[0] for t in titles) + 2 * _PAD
    top_h = _text_size(title_font, title)[1] + 2 * _PAD if title else 0
    bottom_h = _text_size(text_font, footer)[1] + 2 * _PAD if footer else 0

    canvas_w = 2 * _GUTTER + title_col_w + grid_w
    # Widen rather than clip a title or footer longer than the grid.
    for font, text in ((title_font, title), (text_font, footer)):
        if text:
            canvas_w = max(canvas_w, _text_size(font, text)[0] + 2 * _PAD)
    canvas_h = 2 * _GUTTER + top_h + grid_h + bottom_h

    canvas = np.full((canvas_h, canvas_w, channels), _BACKGROUND, dtype=np.uint8)
    grid_x, grid_y = _GUTTER + title_col_w, _GUTTER + top_h
    upscaled = images.repeat(scale, axis=2).repeat(scale, axis=3)
    for r in range(rows):
        y = grid_y + r * (cell_h + _GUTTER)
        for c in range(cols):
            x = grid_x + c * (cell_w + _GUTTER)
            canvas[y : y + cell_h, x : x + cell_w] = upscaled[r, c]

    picture = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
    draw = ImageDraw.Draw(picture)
    for r, text in enumerate(titles):
        row_center = grid_y + r * (cell_h + _GUTTER) + cell_h / 2
        _draw_text(draw, text_font, text, _GUTTER + _PAD, row_center)
    if title:
        title_w = _text_size(title_font, title)[0]
        # Centred over the images, shifted left only as far as needed to fit.
        x = min(grid_x + (grid_w - title_w) // 2, canvas_w - title_w - _PAD)
        _draw_text(draw, title_font, title, max(x, _PAD), _GUTTER + top_h / 2)
    if footer:
        _draw_text(draw, text_font, footer, _GUTTER + _PAD, grid_y + grid_h + bottom_h / 2)

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())  # local, or a bucket (gs://...)
