"""The engine: it learns, it is reproducible, checkpoints round-trip and a resumed run equals an
uninterrupted one exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from resnet_core import CheckpointError, TrainConfig, fit
from resnet_core.engine import checkpoint as checkpoint_module
from resnet_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from resnet_core.engine.fit import TIME_CHECK_EVERY, CheckpointWritten

FAST = dict(arch="cifar_resnet", depth=8, batch_size=32, device="cpu", eval_every=5, checkpoint_every=5)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)


def test_learns_the_synthetic_task(tiny_dataset) -> None:
    result = fit(TrainConfig(**{**FAST, "iterations": 60, "eval_every": 20}), data=tiny_dataset)
    assert result.history[0].train_error > result.final.train_error
    assert result.final.test_error < 25.0  # chance is 66.7%
    assert [r.iteration for r in result.history] == [20, 40, 60]


def test_same_seed_same_weights_other_seed_other_weights(tiny_dataset) -> None:
    config = TrainConfig(**{**FAST, "iterations": 8})
    first, second = fit(config, data=tiny_dataset), fit(config, data=tiny_dataset)
    other = fit(config.replace(seed=1), data=tiny_dataset)
    assert _same_weights(first.model, second.model)
    assert not _same_weights(first.model, other.model)


def test_callbacks_receive_every_evaluation_with_its_checkpoint(tiny_dataset, tmp_path: Path) -> None:
    seen = []
    fit(TrainConfig(**{**FAST, "iterations": 12}), data=tiny_dataset, out_dir=tmp_path, callbacks=[seen.append])
    assert [r.iteration for r in seen] == [5, 10, 12]
    assert all(r.checkpoint == str(tmp_path / CHECKPOINT_NAME) for r in seen)
    assert all(0 <= r.train_error <= 100 and r.test_loss > 0 for r in seen)


def test_validation_split_is_reported(tiny_dataset) -> None:
    result = fit(TrainConfig(**{**FAST, "iterations": 5, "val_split": 32}), data=tiny_dataset)
    assert result.final.val_error is not None and result.final.val_loss is not None


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes_exactly(tiny_dataset, tmp_path: Path) -> None:
    config = TrainConfig(**{**FAST, "iterations": 20, "warmup": True, "warmup_window": 5, "milestones": (15,)})
    uninterrupted = fit(config, data=tiny_dataset)

    def stop_at_10(report) -> None:
        if report.iteration == 10:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(config, data=tiny_dataset, out_dir=tmp_path, callbacks=[stop_at_10])
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["iteration"] == 10
    resumed = fit(config, data=tiny_dataset, out_dir=tmp_path, resume_from=tmp_path / CHECKPOINT_NAME)

    assert _same_weights(uninterrupted.model, resumed.model)
    strip = lambda history: [{**r.row(), "seconds": 0} for r in history]  # noqa: E731
    assert strip(resumed.history) == strip(uninterrupted.history)
    assert resumed.warmup_ended_at == uninterrupted.warmup_ended_at


def test_resume_between_evaluations_keeps_running_metrics(tiny_dataset, tmp_path: Path) -> None:
    """A checkpoint taken between evaluations carries the partial training-error sums."""
    config = TrainConfig(**{**FAST, "iterations": 12, "eval_every": 6, "checkpoint_every": 4})
    uninterrupted = fit(config, data=tiny_dataset)

    def stop_at_6(report) -> None:
        raise _Interrupt

    with pytest.raises(_Interrupt):  # dies at the evaluation of iteration 6; the checkpoint is from 4
        fit(config, data=tiny_dataset, out_dir=tmp_path, callbacks=[stop_at_6])
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["iteration"] == 4
    resumed = fit(config, data=tiny_dataset, resume_from=tmp_path / CHECKPOINT_NAME)
    assert _same_weights(uninterrupted.model, resumed.model)
    assert [(r.iteration, r.train_error, r.train_loss) for r in resumed.history] == [
        (r.iteration, r.train_error, r.train_loss) for r in uninterrupted.history
    ]


def test_checkpoints_between_evaluations_reach_the_checkpoint_callbacks(tiny_dataset, tmp_path: Path) -> None:
    """Checkpoints at evaluations travel in EvalReport.checkpoint; the others go to the checkpoint callbacks."""
    config = TrainConfig(**{**FAST, "iterations": 12, "eval_every": 6, "checkpoint_every": 4})
    evaluations: list = []
    written: list[CheckpointWritten] = []
    fit(config, data=tiny_dataset, out_dir=tmp_path, callbacks=[evaluations.append],
        checkpoint_callbacks=[written.append])
    path = str(tmp_path / CHECKPOINT_NAME)
    assert written == [CheckpointWritten(4, path), CheckpointWritten(8, path)]
    assert [(r.iteration, r.checkpoint) for r in evaluations] == [(6, None), (12, path)]


def test_time_based_checkpoint_between_evaluations_resumes_exactly(tiny_dataset, tmp_path: Path) -> None:
    """checkpoint_seconds writes a checkpoint at the first clock check (not an evaluation, mid warm-up window);
    the run resumed from it ends with the uninterrupted run's weights and history."""
    config = TrainConfig(**{**FAST, "iterations": TIME_CHECK_EVERY + 5, "eval_every": 10, "checkpoint_every": 1000,
                            "checkpoint_seconds": 1e-6, "warmup": True, "warmup_window": TIME_CHECK_EVERY + 5})
    uninterrupted = fit(config, data=tiny_dataset)
    kept = tmp_path / "kept"

    def keep(written: CheckpointWritten) -> None:  # later checkpoints overwrite the file: copy this one
        kept.mkdir()
        shutil.copy(written.path, kept / CHECKPOINT_NAME)

    seen: list[CheckpointWritten] = []
    fit(config, data=tiny_dataset, out_dir=tmp_path / "run", checkpoint_callbacks=[seen.append, keep])
    assert seen == [CheckpointWritten(TIME_CHECK_EVERY, str(tmp_path / "run" / CHECKPOINT_NAME))]
    assert TIME_CHECK_EVERY % config.eval_every != 0  # the premise: it falls between evaluations
    state = load_checkpoint(kept / CHECKPOINT_NAME)
    assert state["iteration"] == TIME_CHECK_EVERY and len(state["history"]) == TIME_CHECK_EVERY // 10
    assert state["train_sums"][2] == 5 * 32 and state["window_sums"][1] == TIME_CHECK_EVERY * 32  # partial sums

    resumed = fit(config, data=tiny_dataset, resume_from=kept / CHECKPOINT_NAME)
    assert _same_weights(uninterrupted.model, resumed.model)
    assert [{**r.row(), "seconds": 0} for r in resumed.history] == [
        {**r.row(), "seconds": 0} for r in uninterrupted.history
    ]
    assert [r.iteration for r in resumed.history] == [10, 20, 30]
    assert resumed.warmup_ended_at == uninterrupted.warmup_ended_at


def test_no_time_based_checkpoint_without_checkpoint_seconds(tiny_dataset, tmp_path: Path) -> None:
    seen: list[CheckpointWritten] = []
    config = TrainConfig(**{**FAST, "iterations": TIME_CHECK_EVERY, "eval_every": 1000, "checkpoint_every": 1000})
    fit(config, data=tiny_dataset, out_dir=tmp_path, checkpoint_callbacks=[seen.append])
    assert seen == [] and load_checkpoint(tmp_path / CHECKPOINT_NAME)["iteration"] == TIME_CHECK_EVERY


def test_checkpoint_round_trip_holds_the_full_state(tiny_dataset, tmp_path: Path) -> None:
    config = TrainConfig(**{**FAST, "iterations": 5})
    result = fit(config, data=tiny_dataset, out_dir=tmp_path)
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert {"model", "optimizer", "iteration", "rng", "config", "history", "warmup"} <= set(state)
    assert TrainConfig.from_dict(state["config"]) == config
    assert state["optimizer"]["state"]  # momentum buffers are saved
    restored = type(result.model)(depth=8, num_classes=3)
    restored.load_state_dict(state["model"])
    assert _same_weights(restored, result.model)


def test_resume_refuses_a_different_recipe(tiny_dataset, tmp_path: Path) -> None:
    config = TrainConfig(**{**FAST, "iterations": 5})
    fit(config, data=tiny_dataset, out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="lr=0.1 but this run asks for lr=0.05"):
        fit(config.replace(lr=0.05, iterations=10), data=tiny_dataset, resume_from=tmp_path / CHECKPOINT_NAME)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"iteration": 1})

    def broken_save(obj, stream) -> None:
        stream.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"iteration": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temp file left behind


def test_loading_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "payload": Path("x")}, path)  # not allowed under weights_only
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "garbage.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_on_cuda_learns(tiny_dataset) -> None:
    result = fit(TrainConfig(**{**FAST, "iterations": 60, "eval_every": 60, "device": "cuda", "bf16": True}),
                 data=tiny_dataset)
    assert result.final.test_error < 25.0
