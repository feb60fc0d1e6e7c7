"""Tests of synthjax.eval.grids: PNG grid size, modes, text areas and label names."""

import numpy as np
import pytest
from PIL import Image

from synthjax.eval.grids import label_combination_name, save_image_grid

NAMES = ["No Finding", "Cardiomegaly", "Edema", "Pleural Effusion"]


def _images(rows, cols, size, channels, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(rows, cols, size, size, channels), dtype=np.uint8)


def test_label_combination_name():
    assert label_combination_name([0, 1, 1, 0], NAMES) == "Cardiomegaly+Edema"
    assert label_combination_name(np.zeros(4, np.float32), NAMES) == "none"
    long_name = label_combination_name([0, 1, 1, 1], NAMES, max_len=20)
    assert long_name == "Cardiomegaly+Edem..." and len(long_name) == 20
    with pytest.raises(ValueError, match="4 names"):
        label_combination_name([1, 0], NAMES)


@pytest.mark.parametrize("channels", [1, 3])
def test_plain_grid_has_the_expected_size(tmp_path, channels):
    path = tmp_path / "samples" / "step_10.png"
    save_image_grid(path, _images(3, 5, 32, channels), min_cell=64)
    with Image.open(path) as picture:
        # 32 px cells doubled to 64, 2 px gutters between and around the cells.
        assert picture.size == (5 * 64 + 6 * 2, 3 * 64 + 4 * 2)
        assert picture.mode == ("L" if channels == 1 else "RGB")
        pixels = np.asarray(picture)
    source = _images(3, 5, 32, channels)
    top_left = pixels[2 : 2 + 64, 2 : 2 + 64].reshape(64, 64, channels)
    np.testing.assert_array_equal(top_left, source[0, 0].repeat(2, axis=0).repeat(2, axis=1))


def test_cells_keep_their_size_when_already_large(tmp_path):
    path = tmp_path / "grid.png"
    save_image_grid(path, _images(1, 2, 100, 1), min_cell=64)
    with Image.open(path) as picture:
        assert picture.size == (2 * 100 + 3 * 2, 100 + 2 * 2)


def test_titles_and_footer_add_margins(tmp_path):
    plain, titled = tmp_path / "plain.png", tmp_path / "titled.png"
    images = _images(2, 4, 32, 1)
    save_image_grid(plain, images)
    save_image_grid(
        titled,
        images,
        row_titles=["Cardiomegaly+Edema", "a label combination name far too long to show"],
        title="cpD-GAN, step 1200",
        footer="synthetic images; no patient data",
    )
    with Image.open(plain) as a, Image.open(titled) as b:
        assert b.width > a.width and b.height > a.height


def test_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        save_image_grid(tmp_path / "x.png", np.zeros((2, 2, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        save_image_grid(tmp_path / "x.png", np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="row titles"):
        save_image_grid(tmp_path / "x.png", _images(2, 2, 8, 1), row_titles=["one"])


@pytest.mark.parametrize("channels,expected", [(9, (3, 6)), (5, (2, 3)), (15, (6, 9))])
def test_ct_context_channels_show_the_middle_slice(channels, expected):
    from synthjax.eval.grids import display_channels

    images = _images(1, 2, 8, channels)
    np.testing.assert_array_equal(display_channels(images), images[..., expected[0] : expected[1]])
