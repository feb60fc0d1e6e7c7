"""The decoding pool: results in order, failures returned, workers that never outlive it, and a
worker that dies failing the map (and a whole `prepare`) at once instead of hanging it."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from synthjax.data import workers


def _square(x):
    if x == 3:
        raise workers.BadInput("odd_one", str(x))
    return x * x


def _dispositions(_):
    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)


def test_results_in_input_order_with_failures_returned():
    with workers.process_pool(2) as pool:
        out = list(workers.ordered_map(_square, range(40), pool=pool, chunk_size=3))
    assert [item for item, _ in out] == list(range(40))
    assert isinstance(out[3][1], workers.BadInput) and out[3][1].reason == "odd_one"
    assert [value for item, value in out if item != 3] == [i * i for i in range(40) if i != 3]


def test_workers_die_on_sigterm_even_when_the_parent_does_not():
    # A multi-process run's parent only records SIGTERM (the preemption notifier); its
    # forked workers must not inherit that, or the pool's terminate() cannot stop them.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        with workers.process_pool(2) as pool:
            seen = {value for _, value in workers.ordered_map(_dispositions, range(8), pool=pool)}
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == {(signal.SIG_DFL, signal.SIG_IGN)}


@pytest.mark.parametrize("ending", ["finished", "raised"])
def test_a_pool_in_a_parent_that_swallows_sigterm_shuts_down(ending):
    script = textwrap.dedent(
        f"""
        import signal, time
        from synthjax.data import workers
        signal.signal(signal.SIGTERM, lambda *_: None)
        for _ in range(5):
            try:
                with workers.process_pool(2) as pool:
                    for _ in workers.ordered_map(time.sleep, [0.001] * 50, pool=pool):
                        pass
                    if {ending!r} == "raised":
                        raise RuntimeError("stop")
            except RuntimeError:
                pass
        print("shut down")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "shut down" in done.stdout


def _run_script(script, *args, timeout):
    """Runs `script` in a fresh interpreter: a hang fails this test instead of the suite."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done, time.monotonic() - started


_KILL_ONE = """
import os, signal, sys, time
from synthjax.data import workers

def decode(x):
    if x == 7:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    return x * x

started = time.monotonic()
try:
    with workers.process_pool(2) as pool:
        for _ in workers.ordered_map(decode, range(200), pool=pool, chunk_size=2):
            pass
except workers.WorkerDied as error:
    print(f"after {time.monotonic() - started:.1f} s: {error}")
else:
    print("finished without noticing")
"""


def test_a_killed_worker_fails_the_map_within_a_minute():
    done, seconds = _run_script(_KILL_ONE, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "killed by SIGKILL" in done.stdout, done.stdout
    assert "prepare_workers" in done.stdout  # says what to do
    assert seconds < 60


_KILL_IN_PREPARE = """
import os, signal, sys, time
from synthjax.data import builder, chexpert
from synthjax.data.phantoms.cxr import writer as phantom_cxr
from synthjax.core.errors import SynthjaxError

raw, data = sys.argv[1], sys.argv[2]
phantom_cxr.write_chexpert_phantom(
    raw, num_patients=30, image_size=32, seed=4, noise=1.0, subtlety=1.0, anatomy_variation=1.0
)
decode_row = builder.decode_row

def dying_decode(row, **kwargs):
    # Forked workers see this module-level patch; the parent never calls it.
    if row.key.startswith("patient00003/"):
        os.kill(os.getpid(), signal.SIGKILL)
    return decode_row(row, **kwargs)

builder.decode_row = dying_decode
started = time.monotonic()
try:
    chexpert.prepare_chexpert(raw, data, resolution=8, base_resolution=32, workers=2)
except SynthjaxError as error:
    print(f"{type(error).__name__} after {time.monotonic() - started:.1f} s: {error}")
else:
    print("prepare finished")
"""


def test_a_killed_worker_fails_prepare_with_a_clear_error(tmp_path):
    done, _ = _run_script(_KILL_IN_PREPARE, tmp_path / "raw", tmp_path / "data", timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("WorkerDied after "), done.stdout
    seconds = float(done.stdout.split()[2])  # from prepare's start to the error
    assert seconds < 60
    assert "(killed by SIGKILL)" in done.stdout
    # Nothing half-written is left looking complete.
    assert not list((tmp_path / "data").rglob("dataset_info.json"))
