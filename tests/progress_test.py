"""Tests of synthjax.core.progress: itstime cases and Progress lines under an injected clock."""

import pytest

from synthjax.core.progress import Progress, format_duration, itstime


@pytest.mark.parametrize(
    ("step", "every", "kwargs", "expected"),
    [
        (100, 100, {}, True),
        (200, 100, {}, True),
        (150, 100, {}, False),
        (1, 100, {}, False),
        (1, 100, {"first": True}, True),
        (2, 100, {"first": True}, False),
        (990, 100, {"total": 990}, True),  # the last step, off the period
        (989, 100, {"total": 990}, False),
        (100, 0, {}, False),  # every <= 0: never
        (100, -5, {}, False),
        (50, 0, {"total": 50}, True),  # ... except the last step
        (1, 0, {"first": True}, True),  # ... and the first if asked
    ],
)
def test_itstime(step, every, kwargs, expected):
    assert itstime(step, every, **kwargs) is expected


def test_format_duration():
    assert format_duration(0.4) == "0s"
    assert format_duration(42) == "42s"
    assert format_duration(374) == "6m14s"
    assert format_duration(2 * 3600 + 5 * 60 + 7) == "2h05m"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _progress(total=5000, **kwargs):
    clock, lines = FakeClock(), []
    progress = Progress("gan", total, items_per_step=64, log_fn=lines.append, clock=clock, **kwargs)
    return progress, clock, lines


def test_first_step_reported_separately_and_excluded_from_rates():
    progress, clock, lines = _progress(every_seconds=10.0)
    clock.now += 30.0  # compilation
    progress.update(1)
    assert len(lines) == 1 and "30.0s" in lines[0] and "compilation" in lines[0]
    for step in range(2, 42):
        clock.now += 0.25
        progress.update(step, loss_d=-0.12, loss_g=1.3)
    # 40 steps at 4 step/s: the 10 s mark is reached at step 41.
    assert len(lines) == 2
    assert lines[1] == (
        "gan    41/5000 (0.8%)  4.00 step/s  256.0 img/s  elapsed 40s  ETA 20m40s"
        "  loss_d=-0.12 loss_g=1.3"
    )
    summary = progress.summary()
    assert summary["first_step_s"] == 30.0
    assert summary["measured_steps"] == 40
    assert summary["steps_per_s"] == pytest.approx(4.0)
    assert summary["items_per_s"] == pytest.approx(256.0)
    assert summary["wall_s"] == pytest.approx(40.0)


def test_eta_uses_the_mean_rate_so_far():
    """The rate shown is since the last line; the ETA uses the mean since the first measured
    step, so a line that follows an evaluation does not predict hours."""
    progress, clock, lines = _progress(total=1000, every_seconds=10.0)
    progress.update(1)
    clock.now += 10.0
    progress.update(101)  # 10 step/s
    clock.now += 10.0
    progress.update(151)  # 5 step/s since the last line; 7.5 since step 1: 849 / 7.5 = 113 s
    assert "5.00 step/s" in lines[-1] and "ETA 1m53s" in lines[-1]
    assert progress.summary()["steps_per_s"] == pytest.approx(150 / 20)


def test_prints_at_most_every_interval_and_always_at_the_end():
    progress, clock, lines = _progress(total=100, every_seconds=10.0)
    for step in range(1, 101):
        clock.now += 1.0
        progress.update(step)
    # First-step line, one line per 10 s (steps 11, 21, ..., 91) and the final step.
    assert len(lines) == 1 + 9 + 1
    assert lines[-1].startswith("gan  100/100 (100.0%)") and "done" in lines[-1]


def test_resume_counts_from_start_step():
    progress, clock, lines = _progress(total=200, start_step=150, every_seconds=0.0)
    clock.now += 5.0
    progress.update(151)
    clock.now += 2.0
    progress.update(161)
    assert "5.00 step/s" in lines[-1] and "ETA 8s" in lines[-1]
    summary = progress.summary()
    assert summary["start_step"] == 150 and summary["measured_steps"] == 10


def test_summary_before_any_measured_step():
    progress, _, _ = _progress()
    summary = progress.summary()
    assert summary["steps_per_s"] is None and summary["measured_steps"] == 0
