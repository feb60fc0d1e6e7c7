"""The decoding pool: results in order, failures returned, and workers that never outlive it."""

import signal
import subprocess
import sys
import textwrap

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
