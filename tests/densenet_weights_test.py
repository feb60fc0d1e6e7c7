"""Tests for pretrained DenseNet weights: scripts/convert_densenet121.py and
synthjax.models.densenet_weights, on random checkpoints in torchvision's layout.

`torchvision_state_dict` writes a DenseNet state_dict the way torchvision's
`models.densenet.DenseNet` names and shapes it (features.conv0, norm0, denseblock{b}.
denselayer{l}.{norm1,conv1,norm2,conv2}, transition{b}.{norm,conv}, norm5, classifier), from
the architecture's numbers alone, with numpy: no torch, and no synthjax code. A NumPy forward
pass over that state_dict in torch's NCHW layout (`reference_forward`) is the reference the
Flax network, loaded through the converter and `load_pretrained`, must reproduce.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthjax.models import densenet, densenet_weights
from synthjax.train import classifier
from synthjax.train.classifier_inputs import InputSpec, classifier_inputs
from tests.torch_checkpoints_test import load_script

# A small DenseNet with DenseNet-121's structure: ImageNet stem, 3 blocks, 2 transitions.
TINY = dict(block_sizes=(2, 3, 2), growth_rate=4, num_init_features=8, bn_size=2)


def _load_script():
    return load_script("convert_densenet121")


def torchvision_shapes(block_sizes, growth_rate, num_init_features, bn_size, classes=1000):
    """name -> shape of torchvision's DenseNet(...).state_dict() (3-channel input)."""
    shapes = {"features.conv0.weight": (num_init_features, 3, 7, 7)}

    def norm(prefix, n):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{leaf}"] = (n,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    norm("features.norm0", num_init_features)
    n = num_init_features
    for b, layers in enumerate(block_sizes, start=1):
        for i in range(1, layers + 1):
            p = f"features.denseblock{b}.denselayer{i}"
            norm(f"{p}.norm1", n)
            shapes[f"{p}.conv1.weight"] = (bn_size * growth_rate, n, 1, 1)
            norm(f"{p}.norm2", bn_size * growth_rate)
            shapes[f"{p}.conv2.weight"] = (growth_rate, bn_size * growth_rate, 3, 3)
            n += growth_rate
        if b < len(block_sizes):
            norm(f"features.transition{b}.norm", n)
            shapes[f"features.transition{b}.conv.weight"] = (n // 2, n, 1, 1)
            n //= 2
    norm("features.norm5", n)
    shapes["classifier.weight"] = (classes, n)
    shapes["classifier.bias"] = (classes,)
    return shapes


def torchvision_state_dict(seed, **arch):
    """Random values for `torchvision_shapes`: He-scaled convs, BN affine near (1, 0), running
    stats that matter (means ~ N(0, 0.1), variances in [0.5, 1.5])."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in torchvision_shapes(**arch).items():
        if name.endswith("num_batches_tracked"):
            value = np.array(1000, np.int64)
        elif name.endswith("conv0.weight") or ".conv" in name:
            value = rng.standard_normal(shape) * np.sqrt(1.5 / np.prod(shape[1:]))
        elif name.endswith(("running_var", "norm0.weight")) or (
            ".norm" in name and name.endswith("weight")
        ):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # norm biases, running means, the classifier
            value = rng.normal(0.0, 0.1, shape)
        out[name] = np.asarray(value, np.float32 if value.dtype != np.int64 else np.int64)
    return out


# --- NumPy reference forward in torch's layout (NCHW, OIHW) ------------------------------------


def _conv(x, w, stride=1, pad=0):
    b, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((b, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
            out += np.einsum("bchw,oc->bohw", patch, w[:, :, i, j])
    return out


def _bn_relu(x, sd, prefix):
    g, beta = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
    m, v = sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"]
    y = (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + 1e-5)
    return np.maximum(y * g[None, :, None, None] + beta[None, :, None, None], 0.0)


def reference_forward(sd, x, block_sizes, head_w, head_b):
    """torchvision's DenseNet.forward in eval mode: x float64[B, 3, H, W] ->
    (logits [B, K], pooled features [B, F]); the head given as torch's Linear (K, F)."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = _conv(x, sd["features.conv0.weight"], stride=2, pad=3)
    x = _bn_relu(x, sd, "features.norm0")
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    oh, ow = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
    x = np.max(
        [x[:, :, i : i + 2 * oh : 2, j : j + 2 * ow : 2] for i in range(3) for j in range(3)],
        axis=0,
    )
    for b, layers in enumerate(block_sizes, start=1):
        for i in range(1, layers + 1):
            p = f"features.denseblock{b}.denselayer{i}"
            y = _conv(_bn_relu(x, sd, f"{p}.norm1"), sd[f"{p}.conv1.weight"])
            y = _conv(_bn_relu(y, sd, f"{p}.norm2"), sd[f"{p}.conv2.weight"], pad=1)
            x = np.concatenate([x, y], axis=1)
        if b < len(block_sizes):
            t = f"features.transition{b}"
            x = _conv(_bn_relu(x, sd, f"{t}.norm"), sd[f"{t}.conv.weight"])
            h, w = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
            x = x[:, :, :h, :w].reshape(x.shape[0], x.shape[1], h // 2, 2, w // 2, 2).mean((3, 5))
    pooled = _bn_relu(x, sd, "features.norm5").mean(axis=(2, 3))
    return pooled @ head_w.T + head_b, pooled


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    return densenet.DenseNet(num_classes=5, **TINY)


@pytest.fixture(scope="module")
def tiny_state_dict():
    return torchvision_state_dict(7, **TINY)


@pytest.fixture(scope="module")
def tiny_weights(tiny_state_dict, tmp_path_factory):
    """The tiny checkpoint as the converter writes it."""
    path = tmp_path_factory.mktemp("densenet") / "tiny.npz"
    np.savez(path, **_load_script().convert_state_dict(tiny_state_dict))
    return path


# --- the layout: DenseNet-121 as torchvision has it ----------------------------------------


def test_densenet121_names_and_shapes_are_torchvisions():
    expected = densenet_weights.expected_state_dict_shapes(densenet.densenet121(1000))
    shapes = torchvision_shapes((6, 12, 24, 16), 32, 64, 4)
    kept = {
        k: v
        for k, v in shapes.items()
        if not k.startswith("classifier.") and not k.endswith("num_batches_tracked")
    }
    assert expected == dict(sorted(kept.items()))
    # torchvision documents densenet121 at 7,978,856 parameters; its classifier holds
    # 1024 x 1000 + 1000 of them, running statistics are not parameters.
    params = sum(int(np.prod(v)) for k, v in shapes.items() if k.endswith(("weight", "bias")))
    assert params == 7_978_856
    stats = sum(int(np.prod(v)) for k, v in expected.items() if "running" in k)
    assert sum(int(np.prod(v)) for v in expected.values()) - stats == 7_978_856 - 1_025_000


# --- converter -----------------------------------------------------------------------------


def test_converter_drops_the_imagenet_head_and_counters_and_renames_old_names():
    script = _load_script()
    sd = {
        "features.conv0.weight": np.ones((8, 3, 7, 7), np.float64),
        "features.denseblock1.denselayer1.norm.1.weight": np.ones(8),
        "features.denseblock1.denselayer1.conv.2.weight": np.ones((4, 8, 3, 3)),
        "features.norm0.num_batches_tracked": np.array(3, np.int64),
        "classifier.weight": np.ones((1000, 8)),
        "classifier.bias": np.ones(1000),
    }
    out = script.convert_state_dict({"module." + k: v for k, v in sd.items()})
    assert sorted(out) == [
        "features.conv0.weight",
        "features.denseblock1.denselayer1.conv2.weight",
        "features.denseblock1.denselayer1.norm1.weight",
    ]
    assert all(v.dtype == np.float32 for v in out.values())
    with pytest.raises(ValueError, match="torchvision DenseNet"):
        script.convert_state_dict({"conv1.weight": np.ones((64, 3, 7, 7))})


# --- loading: every parameter placed, none unused, the same network -------------------------


def test_every_parameter_comes_from_the_file_but_the_head(tiny_model, tiny_weights):
    pretrained = densenet_weights.load_pretrained(tiny_weights, tiny_model)
    init = functools.partial(
        classifier.init_state,
        3,
        tiny_model,
        classifier.make_optimizer(1e-4),
        (32, 32, 1),
        inputs=InputSpec("study", 64),
    )
    fresh = jax.jit(init)(None)
    state = jax.jit(init)(pretrained)
    with np.load(tiny_weights) as npz:
        file = {k: npz[k] for k in npz.files}
    used = set()
    for collection in ("params", "batch_stats"):
        tree = getattr(state, collection)
        for module, leaves in tree.items():
            for leaf, value in leaves.items():
                if module == "head":  # new: the fresh initialisation, untouched
                    np.testing.assert_array_equal(value, getattr(fresh, collection)[module][leaf])
                    continue
                torch_leaf = densenet_weights._LEAVES[(collection, leaf)]
                name = f"{densenet_weights.torch_module_name(module)}.{torch_leaf}"
                expected = file[name].transpose(2, 3, 1, 0) if leaf == "kernel" else file[name]
                np.testing.assert_array_equal(value, expected, err_msg=name)
                assert not np.array_equal(value, getattr(fresh, collection)[module][leaf]), name
                used.add(name)
    assert used == set(file)  # every array of the file placed, none left over
    # The selection's copy starts from the same variables.
    np.testing.assert_array_equal(
        state.best.params["params"]["stem_conv"]["kernel"], state.params["stem_conv"]["kernel"]
    )


def test_loaded_network_matches_a_numpy_forward_of_the_torch_weights(
    tiny_model, tiny_weights, tiny_state_dict
):
    pretrained = densenet_weights.load_pretrained(tiny_weights, tiny_model)
    spec = InputSpec("study", 40)  # 40 -> 20 -> 10 -> 5 -> 2 (odd sides: floor pooling)
    init = functools.partial(
        classifier.init_state, 0, tiny_model, classifier.make_optimizer(1e-4), (24, 24, 1)
    )
    state = jax.jit(functools.partial(init, inputs=spec))(pretrained)
    images = np.random.default_rng(4).integers(0, 256, (3, 24, 24, 1), dtype=np.uint8)
    predict = jax.jit(functools.partial(classifier.predict, model=tiny_model, inputs=spec))
    probs, features = predict(state.params, state.batch_stats, jnp.asarray(images))
    x = np.asarray(classifier_inputs(jnp.asarray(images), spec), np.float64)
    head = state.params["head"]
    logits, pooled = reference_forward(
        tiny_state_dict,
        x.transpose(0, 3, 1, 2),
        TINY["block_sizes"],
        np.asarray(head["kernel"], np.float64).T,
        np.asarray(head["bias"], np.float64),
    )
    np.testing.assert_allclose(features, pooled, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probs, 1.0 / (1.0 + np.exp(-logits)), rtol=1e-4, atol=1e-6)


# --- errors --------------------------------------------------------------------------------


def test_missing_file_names_the_converter(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        densenet_weights.load_pretrained(tmp_path / "nowhere.npz", tiny_model)
    message = str(info.value)
    assert "scripts/convert_densenet121.py" in message and "nowhere.npz" in message
    assert "classifier.weights" in message and "never downloaded" in message


def test_wrong_missing_and_extra_names_are_named(tiny_model, tiny_weights, tmp_path):
    with np.load(tiny_weights) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["features.denseblock2.denselayer1.conv2.weight"] = np.zeros((4, 8, 5, 5), np.float32)
    del arrays["features.norm5.running_var"]
    arrays["features.denseblock9.denselayer1.conv1.weight"] = np.zeros((1,), np.float32)
    arrays["classifier.weight"] = np.zeros((1000, 22), np.float32)  # ignored, as torch's head
    np.savez(tmp_path / "w.npz", **arrays)
    with pytest.raises(ValueError) as info:
        densenet_weights.load_pretrained(tmp_path / "w.npz", tiny_model)
    message = str(info.value)
    assert "missing: features.norm5.running_var" in message
    assert "unexpected: features.denseblock9.denselayer1.conv1.weight" in message
    assert (
        "wrong shapes: features.denseblock2.denselayer1.conv2.weight (4, 8, 5, 5) "
        "(expected (4, 8, 3, 3))" in message
    )
    assert "scripts/convert_densenet121.py" in message
    # DenseNet-121's file does not fit the tiny network: refused, not partly loaded.
    with pytest.raises(ValueError, match="wrong shapes"):
        densenet_weights.load_pretrained(
            tiny_weights, densenet.DenseNet(num_classes=5, **{**TINY, "growth_rate": 6})
        )


# --- fine-tuning from the file ---------------------------------------------------------------


def _train(model, pretrained, spec, steps, rng):
    optimizer = classifier.make_optimizer(1e-3)
    init = functools.partial(classifier.init_state, 0, model, optimizer, (16, 16, 1), inputs=spec)
    state = jax.jit(init)(pretrained)
    step = jax.jit(
        functools.partial(
            classifier.train_step, model=model, optimizer=optimizer, inputs=spec, seed=0
        )
    )
    batch = {
        "image": jnp.asarray(rng.integers(0, 256, (16, 16, 16, 1), dtype=np.uint8)),
        "labels": jnp.asarray((rng.random((16, 5)) < 0.4).astype(np.float32)),
    }
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch, jnp.ones(5, jnp.float32))
        losses.append(float(metrics["loss"]))
    return state, batch, losses


def test_batchnorm_running_statistics_start_from_the_files(
    tiny_model, tiny_weights, tiny_state_dict
):
    pretrained = densenet_weights.load_pretrained(tiny_weights, tiny_model)
    spec = InputSpec("study", 32)
    state, batch, _ = _train(tiny_model, pretrained, spec, 1, np.random.default_rng(5))
    # One step: running mean = 0.9 x the file's + 0.1 x this batch's mean of the stem conv.
    x = np.asarray(classifier_inputs(batch["image"], spec), np.float64).transpose(0, 3, 1, 2)
    stem = _conv(x, np.float64(tiny_state_dict["features.conv0.weight"]), stride=2, pad=3)
    expected = 0.9 * tiny_state_dict["features.norm0.running_mean"] + 0.1 * stem.mean((0, 2, 3))
    np.testing.assert_allclose(state.batch_stats["stem_norm"]["mean"], expected, atol=1e-5)


def test_fine_tuning_with_augmentation_lowers_the_loss(tiny_model, tiny_weights):
    pretrained = densenet_weights.load_pretrained(tiny_weights, tiny_model)
    spec = InputSpec("study", 32, augment=True)
    _, _, losses = _train(tiny_model, pretrained, spec, 8, np.random.default_rng(6))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
