"""Tests for synthjax.models.inception: parity with pytorch-fid, preprocessing, loading.

Parity without storing weights: `synthetic_state_dict` regenerates a full FID Inception
state_dict from seeds (one numpy generator per key, seeded with the key's crc32), and
`make_image` four seeded uint8 images (gray 64x64, RGB 64x64, RGB 299x299 and RGB 371x410,
the last one shrunk, non-square). tests/data/inception/ holds what pytorch-fid itself
(versions in reference.json) computes for exactly these weights and images, in eval mode
through its own data path (PIL convert('RGB'), ToTensor, resize_input, normalize_input):
- reference.npz '<case>/features': the 2048-d pool3 features;
- '<case>/input_crops', '<case>/input_mean_std': three 6x6 crops and the per-channel
  mean/std of the resized, normalised 299x299 input, which pin the resize on their own;
- 'rgb299/block_means/<module>': per-channel spatial means of each stem conv and Mixed block
  output, which say where a mismatch starts;
- state_dict_shapes.json: names, shapes and parameter count of pytorch-fid's model.
reference.json also keeps the crc32 of each image and the sha256 of the weights, so a change
in numpy's random streams fails as such rather than as a parity error.

The whole network runs once on the four images (one compile, a few seconds on two CPU
cores), so no test here needs the slow mark.
"""

import hashlib
import json
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthjax.models import inception
from tests.torch_checkpoints_test import load_script

DATA = Path(__file__).parent / "data" / "inception"

# Variance gain of the synthetic conv weights, N(0, CONV_GAIN / fan_in). He's 2 would make
# activations grow with depth: BatchNorm here divides by stored variances that do not match
# the actual ones. With 1.75 the block outputs stay at a standard deviation of 0.3 to 1.3
# and the features at about 1, with half of the ReLUs active.
CONV_GAIN = 1.75

# float32 differences: pytorch-fid in float32 is itself within 4e-6 of its float64 result on
# these cases, and this model within 4e-6 of torch's float32 one, so 1e-4 of the feature
# scale (max |feature| ~ 5-8 here) has a 100x margin, while a wrong padding, pool, branch
# order or resize changes features by 1e-2 or more of that scale.
FEATURE_TOLERANCE = 1e-4
RESIZE_ATOL = 1e-6  # inputs are within [-1, 1]; one float32 rounding is 6e-8


def synthetic_state_dict(shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Deterministic pytorch-fid state_dict (no fc) from seeds: key name -> float32 array.

    Conv weights ~ N(0, CONV_GAIN / fan_in), BN weight ~ U(0.5, 1.5), BN bias ~ N(0, 0.1),
    running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5); one generator per key, seeded with
    zlib.crc32 of its name, keys in sorted order.
    """
    out = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        if name.endswith("conv.weight"):
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) * np.sqrt(CONV_GAIN / fan_in)
        elif name.endswith(("bn.weight", "bn.running_var")):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("bn.bias", "bn.running_mean")):
            value = rng.normal(0.0, 0.1, shape)
        else:
            raise ValueError(f"unexpected state_dict key {name}")
        out[name] = value.astype(np.float32)
    return out


def make_image(seed: int, h: int, w: int, c: int) -> np.ndarray:
    """uint8[h, w, c]: a gradient, 8x8 random blocks and pixel noise, integer arithmetic only."""
    rng = np.random.default_rng(seed)
    y = np.arange(h)[:, None, None]
    x = np.arange(w)[None, :, None]
    ch = np.arange(c)[None, None, :]
    gradient = (x * 160) // max(w - 1, 1) + (y * 96) // max(h - 1, 1) + 40 * ch
    blocks = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, c))
    blocks = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[:h, :w]
    noise = rng.integers(-24, 25, (h, w, c))
    return np.clip((gradient + blocks) // 2 + noise, 0, 255).astype(np.uint8)


def _load_script():
    return load_script("convert_fid_inception")


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((DATA / "reference.json").read_text())


@pytest.fixture(scope="module")
def torch_model() -> dict:
    return json.loads((DATA / "state_dict_shapes.json").read_text())


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(DATA / "reference.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def state_dict(torch_model) -> dict[str, np.ndarray]:
    return synthetic_state_dict(torch_model["shapes"])


@pytest.fixture(scope="module")
def weights_path(state_dict, tmp_path_factory) -> Path:
    """The synthetic weights as the converter writes them from a full torch state_dict."""
    full = dict(state_dict)
    full["fc.weight"] = np.zeros((1008, 2048), np.float32)
    full["fc.bias"] = np.zeros((1008,), np.float32)
    full["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0, np.int64)
    path = tmp_path_factory.mktemp("inception") / "fid_inception.npz"
    np.savez(path, **_load_script().convert_state_dict(full))
    return path


@pytest.fixture(scope="module")
def images(meta) -> dict[str, np.ndarray]:
    return {case: make_image(c["seed"], *c["shape"]) for case, c in meta["cases"].items()}


# --- architecture and weights ----------------------------------------------------------------


def test_state_dict_names_and_shapes_match_pytorch_fid(torch_model):
    expected = inception.expected_state_dict_shapes()
    assert {k: list(v) for k, v in expected.items()} == torch_model["shapes"]


def test_parameter_count_matches_pytorch_fid(weights_path, torch_model):
    # pytorch-fid's FID Inception without fc: 94 conv + BatchNorm units, 470 tensors.
    params, stats = inception.num_parameters(inception.load_params(weights_path))
    assert (params, stats) == (21_785_568, 34_432)
    assert (params, stats) == (torch_model["num_params"], torch_model["num_running_stats"])
    assert len(torch_model["shapes"]) == 470


def test_seeded_inputs_and_weights_are_the_pinned_ones(meta, images, state_dict):
    for case, image in images.items():
        assert zlib.crc32(image.tobytes()) == meta["cases"][case]["crc32"], case
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(state_dict[name].tobytes())
    assert digest.hexdigest() == meta["weights_sha256"]
    assert meta["conv_gain"] == CONV_GAIN


def test_load_params_converts_layouts(weights_path, state_dict):
    variables = inception.load_params(str(weights_path))
    assert set(variables) == {"params", "batch_stats"}
    stem = variables["params"]["Conv2d_1a_3x3"]
    np.testing.assert_array_equal(
        stem["conv"]["kernel"], state_dict["Conv2d_1a_3x3.conv.weight"].transpose(2, 3, 1, 0)
    )
    assert stem["conv"]["kernel"].shape == (3, 3, 3, 32)
    np.testing.assert_array_equal(stem["bn"]["scale"], state_dict["Conv2d_1a_3x3.bn.weight"])
    stats = variables["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]
    np.testing.assert_array_equal(stats["var"], state_dict["Mixed_7c.branch_pool.bn.running_var"])
    kernel = variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]
    assert kernel.shape == (1, 7, 128, 128) and kernel.dtype == np.float32


# --- load_params errors ----------------------------------------------------------------------


def test_load_params_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        inception.load_params(tmp_path / "nowhere.npz")
    message = str(info.value)
    assert "scripts/convert_fid_inception.py" in message
    assert "pt_inception-2015-12-05" in message
    assert "nowhere.npz" in message


@pytest.fixture(scope="module")
def zero_state_dict(torch_model) -> dict[str, np.ndarray]:
    return {k: np.zeros(v, np.float32) for k, v in torch_model["shapes"].items()}


def test_load_params_names_missing_and_extra_keys(zero_state_dict, tmp_path):
    arrays = dict(zero_state_dict)
    del arrays["Mixed_6e.branch7x7dbl_4.bn.running_var"]
    arrays["fc.weight"] = np.zeros((1008, 2048), np.float32)
    np.savez(tmp_path / "w.npz", **arrays)
    with pytest.raises(ValueError, match="missing keys") as info:
        inception.load_params(tmp_path / "w.npz")
    assert "Mixed_6e.branch7x7dbl_4.bn.running_var" in str(info.value)
    assert "unexpected keys: fc.weight" in str(info.value)


def test_load_params_names_wrong_shapes(zero_state_dict, tmp_path):
    arrays = dict(zero_state_dict)
    arrays["Mixed_5b.branch5x5_2.conv.weight"] = np.zeros((64, 48, 3, 3), np.float32)
    np.savez(tmp_path / "w.npz", **arrays)
    with pytest.raises(ValueError, match="wrong shapes") as info:
        inception.load_params(tmp_path / "w.npz")
    assert "Mixed_5b.branch5x5_2.conv.weight (64, 48, 3, 3) (expected (64, 48, 5, 5))" in str(
        info.value
    )


# --- conversion script -----------------------------------------------------------------------


def test_convert_state_dict_drops_unused_entries():
    script = _load_script()
    converted = script.convert_state_dict(
        {
            "Conv2d_1a_3x3.conv.weight": np.ones((32, 3, 3, 3), np.float64),
            "Conv2d_1a_3x3.bn.num_batches_tracked": np.array(7, np.int64),
            "AuxLogits.fc.weight": np.ones((1008, 768)),
            "fc.weight": np.ones((1008, 2048)),
            "fc.bias": np.ones((1008,)),
        }
    )
    assert list(converted) == ["Conv2d_1a_3x3.conv.weight"]
    assert converted["Conv2d_1a_3x3.conv.weight"].dtype == np.float32


# --- preprocessing ---------------------------------------------------------------------------


def _crops(x: np.ndarray, meta: dict) -> np.ndarray:
    s = meta["crop_size"]
    return np.stack([x[a : a + s, b : b + s] for a, b in meta["crop_corners"]])


def test_preprocess_matches_pytorch_fid_resize(images, reference, meta):
    for case, image in images.items():
        x = np.asarray(inception.preprocess(image[None]))[0]
        assert x.shape == (299, 299, 3) and x.dtype == np.float32
        np.testing.assert_allclose(
            _crops(x, meta), reference[f"{case}/input_crops"], rtol=0, atol=RESIZE_ATOL
        )
        x64 = x.astype(np.float64)
        stats = np.stack([x64.mean(axis=(0, 1)), x64.std(axis=(0, 1))])
        np.testing.assert_allclose(
            stats, reference[f"{case}/input_mean_std"], rtol=0, atol=RESIZE_ATOL, err_msg=case
        )


def test_preprocess_tiles_grayscale_and_maps_to_unit_range():
    gray = np.array([[0, 255], [128, 64]], np.uint8)[None, :, :, None]
    x = np.asarray(inception.preprocess(jnp.asarray(gray)))
    assert x.shape == (1, 299, 299, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    # Corners keep the corner pixels (to one rounding: the edge weights are l and 1 - l).
    corners = x[0, [0, 0, -1, -1], [0, -1, 0, -1], 0]
    np.testing.assert_allclose(corners, 2.0 * np.array([0, 255, 128, 64]) / 255.0 - 1.0, atol=1e-6)
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6

    full = np.random.default_rng(0).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    y = np.asarray(inception.preprocess(full))  # already 299: no resampling at all
    np.testing.assert_allclose(y, 2.0 * (full.astype(np.float32) / 255.0) - 1.0, atol=1e-7)
    assert y.min() == -1.0 and y.max() == 1.0


def test_preprocess_shrinks_without_antialiasing():
    # At exactly 2x, align_corners=False samples at 2i + 0.5: the mean of pixels 2i and 2i+1.
    # An antialiased resize would also weigh in the neighbours 2i - 1 and 2i + 2.
    big = np.random.default_rng(1).integers(0, 256, (1, 598, 598, 3), dtype=np.uint8)
    x = np.asarray(inception.preprocess(big), np.float64)
    unit = big.astype(np.float64) / 255.0
    expected = unit.reshape(1, 299, 2, 299, 2, 3).mean(axis=(2, 4)) * 2.0 - 1.0
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_preprocess_rejects_other_inputs():
    with pytest.raises(TypeError, match="uint8"):
        inception.preprocess(jnp.zeros((1, 8, 8, 3), jnp.float32))
    with pytest.raises(ValueError, match="1 or 3"):
        inception.preprocess(jnp.zeros((1, 8, 8, 2), jnp.uint8))


# --- pooling and lowering --------------------------------------------------------------------


def test_pools_match_brute_force():
    x = np.random.default_rng(2).normal(-1.0, 1.0, (2, 5, 4, 3)).astype(np.float32)
    padded_sum = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    padded_max = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    valid = np.pad(np.ones_like(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    mean, peak = np.zeros_like(x), np.zeros_like(x)
    for i in range(5):
        for j in range(4):
            window = (slice(None), slice(i, i + 3), slice(j, j + 3))
            mean[:, i, j] = padded_sum[window].sum((1, 2)) / valid[window].sum((1, 2))
            peak[:, i, j] = padded_max[window].max((1, 2))
    np.testing.assert_allclose(inception.avg_pool_3x3_exclude_pad(jnp.asarray(x)), mean, 1e-6)
    # Mostly negative inputs: a pool padded with zeros instead of -inf would show it.
    np.testing.assert_array_equal(inception.max_pool_3x3(jnp.asarray(x), stride=1, padding=1), peak)


@pytest.mark.parametrize(
    "kernel_size, stride, padding",
    [((1, 7), 1, ((0, 0), (3, 3))), ((3, 1), 1, ((1, 1), (0, 0))), ((3, 3), 2, ((0, 0), (0, 0)))],
    ids=["1x7", "3x1", "3x3-stride2"],
)
def test_im2col_lowering_matches_native(kernel_size, stride, padding):
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 16))
    kernel = np.random.default_rng(3).standard_normal((*kernel_size, 16, 8)).astype(np.float32)
    variables = {
        "params": {
            "conv": {"kernel": kernel / 4},
            "bn": {"scale": np.ones(8), "bias": np.zeros(8)},
        },
        "batch_stats": {"bn": {"mean": np.zeros(8), "var": np.ones(8)}},
    }
    outputs = {
        lowering: jax.jit(inception.BasicConv2d(8, kernel_size, stride, padding, lowering).apply)(
            variables, x
        )
        for lowering in ("native", "im2col")
    }
    np.testing.assert_allclose(outputs["im2col"], outputs["native"], rtol=1e-5, atol=1e-5)


# --- full network ----------------------------------------------------------------------------

BLOCKS = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)


def _assert_close_to_scale(actual, expected, name: str) -> None:
    scale = float(np.abs(expected).max())
    diff = float(np.abs(np.asarray(actual) - expected).max())
    assert diff <= FEATURE_TOLERANCE * scale, f"{name}: max |diff| {diff:.3g}, scale {scale:.3g}"


def test_features_match_pytorch_fid(weights_path, images, reference):
    cases = list(images)
    batch = jnp.concatenate([inception.preprocess(images[c][None]) for c in cases])
    model = inception.InceptionV3FID()

    @jax.jit
    def run(variables, x):
        wanted = lambda module, _: module.name in BLOCKS
        return model.apply(variables, x, capture_intermediates=wanted)

    features, state = run(inception.load_params(weights_path), batch)
    assert features.shape == (len(cases), 2048) and features.dtype == jnp.float32

    # Block by block first, on the 299x299 image: a failure here names the first wrong block.
    index = cases.index("rgb299")
    captured = state["intermediates"]
    for name in BLOCKS:
        (output,) = captured[name]["__call__"]
        block_means = np.asarray(output[index].mean(axis=(0, 1)))
        _assert_close_to_scale(block_means, reference[f"rgb299/block_means/{name}"], name)
    for i, case in enumerate(cases):
        _assert_close_to_scale(features[i], reference[f"{case}/features"], case)


def test_features_fn_pads_the_last_batch_without_recompiling(
    weights_path, images, reference, monkeypatch
):
    traces = []
    original = inception.preprocess

    def counting_preprocess(x):
        traces.append(x.shape)
        return original(x)

    monkeypatch.setattr(inception, "preprocess", counting_preprocess)
    extract = inception.features_fn(weights_path, batch_size=3)
    gray = images["gray64"]
    # Four images in batches of 3: the gray reference case first and last (then padded).
    stack = np.stack([gray, gray[::-1], gray[:, ::-1], gray])
    features = extract(stack)
    assert features.shape == (4, 2048) and features.dtype == np.float32
    assert traces == [(3, 64, 64, 1)]  # traced once; the padded batch reused it
    _assert_close_to_scale(features[0], reference["gray64/features"], "gray64, first batch")
    _assert_close_to_scale(features[3], reference["gray64/features"], "gray64, padded batch")
    np.testing.assert_allclose(features[3], features[0], rtol=0, atol=1e-5)
    assert extract(stack[:0]).shape == (0, 2048)
    with pytest.raises(ValueError, match="uint8"):
        extract(stack.astype(np.float32))
