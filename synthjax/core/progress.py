"""Deciding when periodic work is due, and reporting training progress with rate and ETA.

Used inside every training loop (classifier and GAN stages): `itstime` answers "is it time to
log / evaluate / save a sample grid at this step", and `Progress` prints one human-readable
line now and then. Neither touches the device: pass host values only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from absl import logging


def itstime(step: int, every: int, *, total: int | None = None, first: bool = False) -> bool:
    """Whether periodic work is due after `step` has completed (steps count from 1).

    Args:
      step: the number of steps completed so far.
      every: period in steps; 0 or negative means never (except `total` / `first`).
      total: the last step of the run; the work is always done there.
      first: also do the work after step 1 (e.g. an early sample grid to catch a bad setup).
    """
    if every > 0 and step % every == 0:
        return True
    if total is not None and step == total:
        return True
    return first and step == 1


def format_duration(seconds: float) -> str:
    """Compact duration: '42s', '6m14s', '2h05m'."""
    seconds = round(max(seconds, 0.0))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _format_scalar(name: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{name}={value:.4g}"
    return f"{name}={value}"


class Progress:
    """Periodic progress lines for a training loop: the rate since the last line, and an ETA
    from the mean rate since the first measured step.

    Call `update(step, **scalars)` after every step (it only reads the clock unless a line is
    due). The first update after start or resume includes compilation, so it is reported once
    on its own and excluded from all rates.

    Example line:
      gan  1200/5000 (24.0%)  3.21 step/s  205.4 img/s  elapsed 6m14s  ETA 19m43s  loss_d=-0.12
    """

    def __init__(
        self,
        name: str,
        total_steps: int,
        *,
        start_step: int = 0,
        items_per_step: int = 0,
        items_at: Callable[[int], float] | None = None,
        item_name: str = "img",
        every_seconds: float = 10.0,
        log_fn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """Starts the clock.

        Args:
          name: shown at the start of each line (the stage name).
          total_steps: the step at which the run ends.
          start_step: the step the run starts (or resumes) from.
          items_per_step: global batch size, for an items/s rate; 0 hides it.
          items_at: items done after n steps, for schedules whose batch size changes
            (prog-GAN's phases); replaces `items_per_step`.
          item_name: what an item is called in the line.
          every_seconds: minimum time between lines (the last step is always printed).
          log_fn: where lines go; absl.logging.info by default.
          clock: seconds as a float, injectable for tests.
        """
        self.name = name
        self.total_steps = total_steps
        self.start_step = start_step
        self.items_per_step = items_per_step
        self._items_at = items_at
        if items_at is None and items_per_step:
            self._items_at = lambda steps: steps * items_per_step
        self.item_name = item_name
        self.every_seconds = every_seconds
        self._log = log_fn if log_fn is not None else logging.info
        self._clock = clock
        self._start_time = clock()
        self._first_step_seconds: float | None = None
        # Set on the first update: where the measured (post-compilation) interval begins.
        self._measure_start: tuple[int, float] | None = None
        self._last_print: tuple[int, float] | None = None
        self._last_update: tuple[int, float] | None = None

    def update(self, step: int, **scalars: Any) -> None:
        """Records that `step` has completed; prints a line if one is due.

        Args:
          step: steps completed so far (counted from 1, like `itstime`).
          **scalars: host values (floats, ints, strings) appended as name=value.
        """
        now = self._clock()
        self._last_update = (step, now)
        if self._measure_start is None:
            self._first_step_seconds = now - self._start_time
            self._measure_start = self._last_print = (step, now)
            self._log(
                f"{self.name}  step {step} took {self._first_step_seconds:.1f}s "
                "(the first step includes start-up and any compilation; not counted in rates)"
            )
            if step >= self.total_steps:
                self._log(self._line(step, now, None, scalars))
            return
        last_step, last_time = self._last_print
        final = step >= self.total_steps
        if not final and now - last_time < self.every_seconds:
            return
        steps_per_second = None
        if step > last_step and now > last_time:
            steps_per_second = (step - last_step) / (now - last_time)
        self._last_print = (step, now)
        items_per_second = None
        if steps_per_second is not None and self._items_at is not None:
            items_per_second = (self._items_at(step) - self._items_at(last_step)) / (
                now - last_time
            )
        self._log(self._line(step, now, steps_per_second, scalars, items_per_second))

    def _line(
        self,
        step: int,
        now: float,
        steps_per_second: float | None,
        scalars: dict[str, Any],
        items_per_second: float | None = None,
    ) -> str:
        width = len(str(self.total_steps))
        percent = 100.0 * step / self.total_steps if self.total_steps else 100.0
        parts = [f"{self.name}  {step:>{width}}/{self.total_steps} ({percent:.1f}%)"]
        if steps_per_second is None:
            parts.append("-- step/s")
        else:
            parts.append(f"{steps_per_second:.2f} step/s")
            if items_per_second is not None:
                parts.append(f"{items_per_second:.1f} {self.item_name}/s")
        parts.append(f"elapsed {format_duration(now - self._start_time)}")
        remaining = self.total_steps - step
        # ETA from the mean rate since the first measured step: it includes the periodic
        # evaluations, which the rate since the last line may or may not.
        mean_rate = None
        if self._measure_start is not None and now > self._measure_start[1]:
            mean_rate = (step - self._measure_start[0]) / (now - self._measure_start[1])
        if remaining <= 0:
            parts.append("done")
        elif mean_rate:
            parts.append(f"ETA {format_duration(remaining / mean_rate)}")
        else:
            parts.append("ETA --")
        line = "  ".join(parts)
        if scalars:
            line += "  " + " ".join(_format_scalar(k, v) for k, v in scalars.items())
        return line

    def summary(self) -> dict[str, Any]:
        """Timing of the run so far, for summary.json.

        Returns:
          {"name", "start_step", "last_step", "wall_s" (construction to last update),
           "first_step_s" (includes compilation), "measured_steps", "measured_s",
           "steps_per_s", "items_per_s"}; rates are means over the measured steps (all but
          the first) and None when there are none.
        """
        last_step, last_time = self._last_update or (self.start_step, self._start_time)
        measured_steps, measured_s = 0, 0.0
        if self._measure_start is not None:
            measured_steps = last_step - self._measure_start[0]
            measured_s = last_time - self._measure_start[1]
        steps_per_s = measured_steps / measured_s if measured_steps > 0 and measured_s > 0 else None
        items_per_s = None
        if steps_per_s is not None and self._items_at is not None:
            start = self._measure_start[0]
            items_per_s = (self._items_at(last_step) - self._items_at(start)) / measured_s
        return {
            "name": self.name,
            "start_step": self.start_step,
            "last_step": last_step,
            "wall_s": last_time - self._start_time,
            "first_step_s": self._first_step_seconds,
            "measured_steps": measured_steps,
            "measured_s": measured_s,
            "steps_per_s": steps_per_s,
            "items_per_s": items_per_s,
        }
