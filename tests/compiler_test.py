"""The compiler options: on CPU the convolutions compile to XLA's own, not YNNPACK's."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthjax.core import compiler


def _conv_loss(w, x):
    y = jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jnp.sum(y * y)


def _conv_inputs():
    # Large enough for XLA's defaults to hand the convolutions to YNNPACK (jaxlib 0.10).
    return jnp.full((3, 3, 32, 32), 0.01, jnp.float32), jnp.ones((16, 32, 32, 32), jnp.float32)


def _library_fused_ops(hlo: str) -> set[str]:
    """The opcodes inside the fused computations that a compiled module hands to a library
    (YNNPACK, XNNPACK, oneDNN)."""
    bodies = {}
    name = None
    for line in hlo.splitlines():
        head = re.match(r"^(%?[\w.\-]+) .*\{$", line)
        if head and not line.startswith(" "):
            name = head.group(1).lstrip("%")
            bodies[name] = []
        elif name is not None and line.startswith("  "):
            bodies[name].append(line)
    ops = set()
    for line in hlo.splitlines():
        if re.search(r'"kind":"__(ynn|xnn|onednn)_fusion"', line):
            callee = re.search(r"calls=%?([\w.\-]+)", line).group(1)
            ops |= set(re.findall(r"= \S+ ([a-z][\w-]*)\(", "\n".join(bodies[callee])))
    return ops


def test_cpu_convolutions_are_xla_own():
    assert jax.default_backend() == "cpu"
    assert compiler.options() == compiler.CPU_OPTIONS
    w, x = _conv_inputs()
    step = compiler.jit(jax.grad(_conv_loss))
    hlo = step.lower(w, x).compile().as_text()
    assert "convolution" not in _library_fused_ops(hlo)
    assert "convolution(" in hlo  # the forward pass and the two gradients are still there
    # Same numbers as XLA's defaults (up to the order of the sums).
    np.testing.assert_allclose(step(w, x), jax.jit(jax.grad(_conv_loss))(w, x), rtol=2e-4)


def test_library_fused_ops_sees_default_fusions():
    """The helper finds library fusions where XLA makes them, else the test above could
    pass for the wrong reason: with XLA's defaults these convolutions go to YNNPACK."""
    w, x = _conv_inputs()
    hlo = jax.jit(jax.grad(_conv_loss)).lower(w, x).compile().as_text()
    if "__ynn_fusion" not in hlo:
        pytest.skip("this jaxlib does not hand convolutions to YNNPACK by default")
    assert "convolution" in _library_fused_ops(hlo)


def test_xla_flags_win(monkeypatch):
    monkeypatch.setenv(
        "XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
    )
    assert compiler.options.__wrapped__() is None
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert compiler.options.__wrapped__() == compiler.CPU_OPTIONS


def test_lazy_jit_builds_one_program_at_first_call():
    calls = []

    @compiler.lazy_jit(static_argnums=1)
    def scale(x, k):
        calls.append(k)  # runs at trace time only
        return x * k

    assert scale.jitted.cache_info().currsize == 0  # nothing built at definition
    assert float(scale(jnp.float32(2), 3)) == 6.0
    assert float(scale(jnp.float32(5), 3)) == 15.0
    assert calls == [3]
    assert scale.jitted()._cache_size() == 1
