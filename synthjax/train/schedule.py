"""The GAN's training schedule in the study's units: phases, batch sizes, kimg <-> steps.

A schedule is a list of phases. cpD-GAN and DCGAN have one: the target resolution at
`gan.<arch>.batch_size` for the whole run. prog-GAN grows (Karras et al. 2018): the first
phase trains at `gan.prog.start_resolution` for `stable_kimg`; every later phase doubles the
resolution, fading the new layers in over `fade_kimg` (alpha 0 -> 1) and then training them
for `stable_kimg`; the last phase (the target resolution) runs until the end. Each phase has
its own batch size (the study's 256 at 8x8 down to 64 at 32x32) and compiles one step
function, with alpha a traced input.

Everything is pure Python on host integers, so the trainer, the data pipeline (which
batch covers which records), validation (before any compute) and the tests agree on where
every step falls. Lengths are in kimg (thousands of real images shown to D), the study's
unit; each part of a phase is rounded up to whole steps.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import TYPE_CHECKING

import ml_collections

if TYPE_CHECKING:  # annotations only: this module stays pure Python
    import jax


@dataclasses.dataclass(frozen=True)
class Phase:
    """One resolution of training. Steps are 0-based indices of the steps run in it."""

    index: int
    resolution: int
    batch_size: int
    start_step: int
    fade_steps: int  # new layers faded in over these first steps (0: nothing to fade)
    stable_steps: int  # then trained at alpha = 1 (the last phase: until the run ends)
    start_images: int  # real images shown before this phase

    @property
    def stable_start(self) -> int:
        return self.start_step + self.fade_steps

    @property
    def end_step(self) -> int:
        return self.start_step + self.fade_steps + self.stable_steps

    def alpha(self, step: int | jax.Array) -> float | jax.Array:
        """Weight of the new layers at step `step` (0 at the first fade step, 1 when stable):
        the one fade-in formula, for a host int (grids, tests) and for the traced int32 step
        inside the train step (then a float32 array; the host gets a float)."""
        if self.fade_steps == 0:
            return 1.0
        t = (step - self.start_step) / self.fade_steps
        return t.clip(0.0, 1.0) if hasattr(t, "clip") else min(1.0, max(0.0, t))


@dataclasses.dataclass(frozen=True)
class Schedule:
    phases: tuple[Phase, ...]
    total_steps: int

    def __post_init__(self):
        if not self.phases or self.total_steps <= 0:
            raise ValueError("a schedule needs at least one phase and one step")

    @property
    def final(self) -> Phase:
        return self.phases[-1]

    @property
    def constant_batch(self) -> int | None:
        """The batch size if every phase uses the same one, else None."""
        sizes = {p.batch_size for p in self.phases}
        return sizes.pop() if len(sizes) == 1 else None

    def phase_at(self, step: int) -> Phase:
        """The phase step `step` (0-based) runs in."""
        starts = [p.start_step for p in self.phases]
        return self.phases[max(0, bisect.bisect_right(starts, step) - 1)]

    def images_at(self, steps: int) -> int:
        """Real images shown after `steps` steps."""
        phase = self.phase_at(max(steps - 1, 0)) if steps else self.phases[0]
        return phase.start_images + (steps - phase.start_step) * phase.batch_size

    def kimg_at(self, steps: int) -> float:
        return self.images_at(steps) / 1000.0

    def steps_at_kimg(self, kimg: float) -> int:
        """The first step count at which at least `kimg` thousand images have been shown."""
        target = kimg * 1000.0
        for phase in self.phases:
            end = phase.start_images + (phase.end_step - phase.start_step) * phase.batch_size
            if target <= end or phase is self.final:
                return phase.start_step + max(
                    0, math.ceil((target - phase.start_images) / phase.batch_size)
                )
        raise AssertionError("unreachable")

    def grown_at(self, steps: int) -> bool:
        """Whether the step after `steps` steps runs at the target resolution with alpha 1."""
        return steps >= self.final.stable_start

    def batch_plan(self) -> list[tuple[int, int]]:
        """[(first step, global batch)] per phase, for the data pipeline."""
        return [(p.start_step, p.batch_size) for p in self.phases]


def parse_batch_sizes(spec: str) -> dict[int, int]:
    """'8:256,16:128,32:64' -> {8: 256, 16: 128, 32: 64}."""
    table = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        try:
            resolution, batch = (int(v) for v in item.split(":"))
        except ValueError:
            raise ValueError(
                f"{item!r} is not 'resolution:batch' (e.g. '8:256,16:128,32:64')"
            ) from None
        table[resolution] = batch
    return table


def _steps(kimg: float, batch: int) -> int:
    return max(0, math.ceil(kimg * 1000.0 / batch))


def prog_resolutions(start: int, target: int) -> list[int]:
    return [2**k for k in range(int(math.log2(start)), int(math.log2(target)) + 1)]


def build_schedule(gan: ml_collections.ConfigDict, resolution: int) -> Schedule:
    """The schedule `gan` describes at target `resolution` (raises ValueError if impossible).

    The run ends at `gan.train_steps` steps when that is > 0, else once `gan.train_kimg`
    thousand images have been shown.
    """
    if gan.arch == "prog":
        prog = gan.prog
        batches = parse_batch_sizes(prog.batch_sizes)
        if prog.start_resolution > resolution:
            raise ValueError(
                f"gan.prog.start_resolution {prog.start_resolution} is above the target "
                f"resolution {resolution}"
            )
        phases, step, images = [], 0, 0
        resolutions = prog_resolutions(prog.start_resolution, resolution)
        missing = [r for r in resolutions if r not in batches]
        if missing:
            raise ValueError(f"gan.prog.batch_sizes has no batch size for resolution(s) {missing}")
        for i, r in enumerate(resolutions):
            b = batches[r]
            fade = _steps(prog.fade_kimg, b) if i else 0
            stable = _steps(prog.stable_kimg, b)
            phases.append(Phase(i, r, b, step, fade, stable, images))
            step += fade + stable
            images += (fade + stable) * b
    else:
        phases = [Phase(0, resolution, gan[gan.arch].batch_size, 0, 0, 0, 0)]
    # The last phase runs until the end of training.
    draft = Schedule(tuple(phases), 1)
    if gan.train_steps > 0:
        total = gan.train_steps
    else:
        total = draft.steps_at_kimg(gan.train_kimg)
    last = phases[-1]
    if total <= last.stable_start:
        grown = draft.kimg_at(last.stable_start)
        raise ValueError(
            f"the run ends after {total} steps ({draft.kimg_at(total):.1f} kimg), before the "
            f"GAN has grown to {resolution}x{resolution} at full weight ({last.stable_start} "
            f"steps, {grown:.1f} kimg): lengthen gan.train_kimg / gan.train_steps or shorten "
            "gan.prog.fade_kimg / gan.prog.stable_kimg"
        )
    phases[-1] = dataclasses.replace(last, stable_steps=total - last.stable_start)
    return Schedule(tuple(phases), total)
