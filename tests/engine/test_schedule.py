"""The paper's step schedule and ResNet-110 warm-up (Sec. 4.2), alone and inside the engine."""

from __future__ import annotations

import pytest

from resnet_core import TrainConfig, fit
from resnet_core.engine.schedule import PlateauMonitor, StepSchedule, WarmupMonitor, warmup_enabled


def test_paper_milestones() -> None:
    schedule = StepSchedule.from_config(TrainConfig())
    expected = {0: 0.1, 31_999: 0.1, 32_000: 0.01, 47_999: 0.01, 48_000: 0.001, 63_999: 0.001}
    for iteration, lr in expected.items():
        assert schedule.lr(iteration) == pytest.approx(lr)
    assert schedule.lr(10, warming_up=True) == 0.01


def test_warmup_is_the_paper_default_only_from_depth_110() -> None:
    config = TrainConfig()
    assert warmup_enabled(config, 110) and warmup_enabled(config, 1202)
    assert not warmup_enabled(config, 56) and not warmup_enabled(config, 20)
    assert not warmup_enabled(TrainConfig(warmup=False), 110)
    assert warmup_enabled(TrainConfig(warmup=True), 20)


def test_warmup_monitor_ends_below_threshold_once() -> None:
    monitor = WarmupMonitor(active=True, until_error=80.0, window=50)
    assert not monitor.update(50, 89.0)
    assert monitor.update(100, 79.9)
    assert not monitor.active and monitor.ended_at == 100
    assert not monitor.update(150, 10.0)


def test_engine_returns_to_the_base_rate_after_warmup(tiny_dataset) -> None:
    """lr 0.01 until the training error < 80%, then back to 0.1, then the milestone divides *0.1*."""
    config = TrainConfig(arch="cifar_resnet", depth=8, warmup=True, warmup_window=5, iterations=30,
                         milestones=(20,), batch_size=32, eval_every=5, device="cpu", lr=0.1, warmup_lr=0.01)
    result = fit(config, data=tiny_dataset)
    lrs = {report.iteration: report.lr for report in result.history}
    # 3 classes: chance error is 67% < 80%, so warm-up ends at the first window check (iteration 5).
    assert result.warmup_ended_at == 5
    assert lrs[5] == pytest.approx(0.01)
    assert lrs[10] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.1)
    assert lrs[25] == pytest.approx(0.01) and lrs[30] == pytest.approx(0.01)


def test_warmup_lasts_while_the_error_stays_high(tiny_dataset) -> None:
    config = TrainConfig(arch="cifar_resnet", depth=8, warmup=True, warmup_window=5, warmup_until_error=1.0,
                         warmup_lr=1e-6, iterations=10, batch_size=32, eval_every=5, device="cpu")
    result = fit(config, data=tiny_dataset)
    assert result.warmup_ended_at is None
    assert [report.lr for report in result.history] == [1e-6, 1e-6]


def test_warmup_is_never_the_default_on_imagenet() -> None:
    assert not warmup_enabled(TrainConfig.for_dataset("imagenet"), 152)
    assert not warmup_enabled(TrainConfig(dataset="imagenet"), 152)


def test_plateau_monitor_divides_after_patience_stale_evaluations() -> None:
    monitor = PlateauMonitor(enabled=True, patience=2, threshold=0.5)
    assert [monitor.update(e) for e in (50.0, 40.0, 39.8, 39.9)] == [False, False, False, True]
    assert monitor.decays == 1 and monitor.best == 39.8
    assert [monitor.update(e) for e in (39.0, 38.0, 38.0)] == [False, False, False]  # improvements reset
    assert monitor.update(38.0) and monitor.decays == 2
    schedule = StepSchedule(base_lr=0.1, milestones=(), decay=0.1, warmup_lr=0.01)
    assert schedule.lr(0, plateau_decays=monitor.decays) == pytest.approx(0.001)
    restored = PlateauMonitor(enabled=True, patience=2, threshold=0.5)
    restored.load_state_dict(monitor.state_dict())
    assert restored == monitor
    assert not PlateauMonitor(enabled=False, patience=1, threshold=0).update(1.0)


def test_engine_divides_the_rate_when_the_error_plateaus(tiny_dataset) -> None:
    """No evaluation improves by 50 points, so every 2 evaluations after the first divide the rate."""
    config = TrainConfig(arch="cifar_resnet", depth=8, lr_schedule="plateau", plateau_patience=2,
                         plateau_threshold=50.0, milestones=(), lr=1e-3, iterations=25, batch_size=32,
                         eval_every=5, device="cpu")
    result = fit(config, data=tiny_dataset)
    # The decision follows an evaluation, so the report at which it is taken still shows the old rate.
    assert [report.lr for report in result.history] == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4])
    assert result.plateau_decays == 2 and result.summary()["lr_decays_on_plateau"] == 2
