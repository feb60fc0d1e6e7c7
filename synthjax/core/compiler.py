"""The XLA compiler options the project's programs compile with, and `jit`, which applies
them: `compiler.jit(f, ...)` is `jax.jit(f, ..., compiler_options=options())`.

On CPU, jaxlib 0.10 hands convolutions, matrix products and reductions to YNNPACK by
default (`__ynn_fusion` in the compiled HLO). YNNPACK's convolution gradients were the
slow path of every training step (measured with `benchmarks/train_step.py`; the numbers
are in benchmarks/README.md), so on CPU YNNPACK keeps the matrix products and the
reductions, the rest of XLA's default list, and the convolutions go to XLA's own.

GPU and TPU compile with their defaults (`options()` is None there). `XLA_FLAGS` wins: with
a `--xla_cpu_experimental_ynn_fusion_type=...` there (e.g. `=+individual_convolution`,
XLA's default) these options are off, and so they are with a jaxlib that does not know
them.

The backend is looked up at the first `jit`, not at import: programs built at import time
use `lazy_jit`, so that `jax.distributed.initialize` can still run first. Programs that
every process of a multi-process run calls (training steps, generators) use
`jit_everywhere`, which also keeps the processes in step at their first run.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from synthjax.core import distributed

CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    )
}


@functools.cache
def options() -> dict[str, str] | None:
    """The compiler options for this process's default backend (None: XLA's defaults)."""
    if jax.default_backend() != "cpu":
        return None
    if "ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
        return None
    try:
        jax.jit(jnp.negative, compiler_options=CPU_OPTIONS).lower(np.float32(0)).compile()
    except jax.errors.JaxRuntimeError:  # a jaxlib without the option
        return None
    return dict(CPU_OPTIONS)


def jit(fun: Callable, **kwargs: Any) -> Any:
    """`jax.jit(fun, **kwargs)` compiled with `options()`."""
    return jax.jit(fun, compiler_options=options(), **kwargs)


def lazy_jit(fun: Callable | None = None, **kwargs: Any) -> Any:
    """`jit` for module-level programs: the jitted function is built at its first call and
    reused after. A decorator too, with or without `jit`'s keyword arguments."""
    if fun is None:
        return functools.partial(lazy_jit, **kwargs)

    @functools.cache
    def jitted() -> Any:
        return jit(fun, **kwargs)

    @functools.wraps(fun)
    def call(*args: Any, **call_kwargs: Any) -> Any:
        return jitted()(*args, **call_kwargs)

    call.jitted = jitted
    return call


def jit_everywhere(fun: Callable, name: str, **kwargs: Any) -> distributed.CompiledEverywhere:
    """`jit(fun, **kwargs)` for programs with collectives that every process runs: on several
    processes each new argument signature is compiled ahead and the processes meet at a
    barrier before its first run (`distributed.CompiledEverywhere`; `name` labels the
    barrier). Positional arguments only at the call."""
    return distributed.CompiledEverywhere(jit(fun, **kwargs), name)
