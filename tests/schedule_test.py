"""The GAN schedule: the study's prog-GAN phases in kimg, steps <-> kimg, refusals."""

import math

import pytest

from configs import default
from synthjax.train import fd_monitor
from synthjax.train.schedule import build_schedule, parse_batch_sizes


def _prog(**overrides):
    cfg = default.get_config()
    cfg.gan.arch = "prog"
    for key, value in overrides.items():
        section, name = key.split(".") if "." in key else ("", key)
        (cfg.gan[section] if section else cfg.gan)[name] = value
    return cfg.gan


def test_study_prog_schedule_at_32():
    schedule = build_schedule(_prog(), 32)
    resolutions = [p.resolution for p in schedule.phases]
    assert resolutions == [8, 16, 32]
    assert [p.batch_size for p in schedule.phases] == [256, 128, 64]
    first, second, last = schedule.phases
    assert first.fade_steps == 0 and first.stable_steps == math.ceil(1_400_000 / 256)
    assert second.fade_steps == second.stable_steps == math.ceil(1_400_000 / 128)
    assert last.fade_steps == math.ceil(1_400_000 / 64)
    # Grown after four periods of 1,400 kimg: 8 stable, 16 fade + stable, 32 fade.
    assert schedule.kimg_at(last.stable_start) == pytest.approx(4 * 1400, abs=0.3)
    assert schedule.kimg_at(schedule.total_steps) == pytest.approx(12_000, abs=0.07)
    assert schedule.phase_at(0) is first and schedule.phase_at(second.start_step) is second
    assert schedule.phase_at(second.start_step - 1) is first
    assert schedule.phase_at(schedule.total_steps - 1) is last
    assert not schedule.grown_at(last.stable_start - 1) and schedule.grown_at(last.stable_start)


def test_alpha_rises_linearly_over_the_fade():
    schedule = build_schedule(_prog(), 32)
    phase = schedule.phases[1]
    assert phase.alpha(phase.start_step) == 0.0
    mid = phase.start_step + phase.fade_steps // 2
    assert phase.alpha(mid) == pytest.approx(0.5, abs=1e-3)
    assert phase.alpha(phase.stable_start) == 1.0 == phase.alpha(phase.end_step - 1)
    assert schedule.phases[0].alpha(3) == 1.0


def test_images_and_kimg_follow_the_batch_plan():
    schedule = build_schedule(
        _prog(
            **{
                "prog.batch_sizes": "8:32,16:16,32:8",
                "prog.fade_kimg": 0.4,
                "prog.stable_kimg": 0.32,
                "train_kimg": 3.0,
            }
        ),
        32,
    )
    images, plan = 0, dict(schedule.batch_plan())
    batch = None
    for step in range(schedule.total_steps):
        batch = plan.get(step, batch)
        images += batch
        assert schedule.images_at(step + 1) == images
        assert schedule.steps_at_kimg(images / 1000) <= step + 1
    assert schedule.steps_at_kimg(schedule.kimg_at(57)) == 57
    assert schedule.images_at(0) == 0


def test_cpd_schedule_and_train_steps_override():
    cfg = default.get_config()
    schedule = build_schedule(cfg.gan, 32)
    assert len(schedule.phases) == 1 and schedule.constant_batch == 256
    assert schedule.total_steps == math.ceil(12_000_000 / 256)
    cfg.gan.train_steps = 30
    assert build_schedule(cfg.gan, 32).total_steps == 30
    prog = _prog(train_steps=100_000)
    assert build_schedule(prog, 32).total_steps == 100_000


def test_refuses_a_run_that_ends_before_the_growth():
    with pytest.raises(ValueError, match=r"before the GAN has grown to 32x32.*5600\.\d kimg"):
        build_schedule(_prog(train_kimg=5000.0), 32)
    with pytest.raises(ValueError, match="no batch size for resolution"):
        build_schedule(_prog(**{"prog.batch_sizes": "8:256,16:128"}), 32)


def test_parse_batch_sizes():
    assert parse_batch_sizes(" 8:256, 16:128 ") == {8: 256, 16: 128}
    with pytest.raises(ValueError, match="resolution:batch"):
        parse_batch_sizes("8=256")


def test_fd_is_due_only_once_grown_and_every_kimg():
    schedule = build_schedule(
        _prog(
            **{
                "prog.batch_sizes": "8:10,16:10",
                "prog.fade_kimg": 0.1,
                "prog.stable_kimg": 0.1,
                "train_kimg": 0.6,
            }
        ),
        16,
    )
    due = fd_monitor.fd_is_due(schedule, every_kimg=0.1)
    # 10 images a step: grown at step 20 (0.2 kimg); then every 10 steps and at the end.
    assert [s for s in range(1, schedule.total_steps + 1) if due(s)] == [30, 40, 50, 60]
    never = fd_monitor.fd_is_due(schedule, every_kimg=0)
    assert [s for s in range(1, schedule.total_steps + 1) if never(s)] == [60]
