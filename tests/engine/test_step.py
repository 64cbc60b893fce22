"""How a step executes (channels-last, compile, bf16, fused SGD, threads): each option works, keeps the
result the eager fp32 NCHW step gives (or, for bf16 and compile, learns as well), and refuses what the
device cannot run with one clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from resnet_core import ConfigError, TrainConfig, create_model, fit
from resnet_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnet_core.engine.step import Execution, TrainStep, default_threads

FAST = dict(arch="cifar_resnet", depth=8, batch_size=32, device="cpu", eval_every=60, checkpoint_every=60,
            iterations=60)
CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.fixture(autouse=True)
def keep_thread_count() -> Iterator[None]:
    """Runs may set the process's intra-op threads; every test leaves them as it found them."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_automatic_choices_follow_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpu, cuda, mps = Execution.resolve(CPU), Execution.resolve(CUDA), Execution.resolve(MPS)
    assert (cpu.channels_last, cpu.fused_sgd, cpu.compile, cpu.bf16) == (True, False, "none", False)
    assert (cuda.channels_last, cuda.fused_sgd) == (True, True)
    assert (mps.channels_last, mps.fused_sgd) == (False, False)
    assert cpu.threads == len(__import__("os").sched_getaffinity(0)) == default_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # Ray sets it to a worker's CPUs: then PyTorch's choice stands
    assert Execution.resolve(CPU).threads is None
    explicit = Execution.resolve(CPU, channels_last=False, fused_sgd=True, threads=3)
    assert (explicit.channels_last, explicit.fused_sgd, explicit.threads) == (False, True, 3)


@pytest.mark.parametrize(("options", "message"), [
    (dict(compile="fast"), "unknown compile mode 'fast'"),
    (dict(threads=0), "threads must be a positive number"),
])
def test_bad_options_are_refused_by_the_config(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**options)


def test_options_a_device_cannot_run_are_refused() -> None:
    with pytest.raises(ConfigError, match="bf16 autocast runs on CUDA or CPU, this run is on mps"):
        Execution.resolve(MPS, bf16=True)
    with pytest.raises(ConfigError, match="fused SGD kernel runs on CUDA or CPU"):
        Execution.resolve(MPS, fused_sgd=True)


def _steps(execution: Execution, steps: int = 3) -> tuple[list[float], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = create_model("cifar_resnet", depth=8)
    step = TrainStep.create(model, execution)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        inputs = torch.randn(16, 3, 16, 16, generator=generator)
        labels = torch.randint(0, 10, (16,), generator=generator)
        loss, errors = step(inputs, labels)
        assert 0 <= int(errors) <= 16
        losses.append(float(loss))
    return losses, model.state_dict()


def test_channels_last_and_fused_sgd_compute_the_same_steps() -> None:
    """Same math, other memory layout / optimizer kernel: equal up to float rounding."""
    reference_losses, reference = _steps(Execution.resolve(CPU, channels_last=False, fused_sgd=False))
    for options in (dict(channels_last=True), dict(channels_last=False, fused_sgd=True)):
        losses, weights = _steps(Execution.resolve(CPU, **options))
        assert losses == pytest.approx(reference_losses, rel=1e-4), options
        for key, value in reference.items():
            assert torch.allclose(weights[key].float(), value.float(), rtol=1e-3, atol=1e-5), (options, key)


def test_channels_last_puts_weights_and_inputs_in_nhwc() -> None:
    model = create_model("cifar_resnet", depth=8)
    execution = Execution.resolve(CPU, channels_last=True)
    execution.prepare_model(model)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert execution.prepare_inputs(torch.zeros(2, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)


def test_threads_option_sets_the_process_threads(tiny_dataset) -> None:
    fit(TrainConfig(**{**FAST, "iterations": 2, "eval_every": 2, "threads": 1}), data=tiny_dataset)
    assert torch.get_num_threads() == 1


def test_bf16_on_cpu_learns_like_fp32(tiny_dataset) -> None:
    fp32 = fit(TrainConfig(**FAST), data=tiny_dataset)
    bf16 = fit(TrainConfig(**{**FAST, "bf16": True}), data=tiny_dataset)
    assert bf16.final.test_error < 25.0 and fp32.final.test_error < 25.0  # chance is 66.7%
    assert abs(bf16.final.train_loss - fp32.final.train_loss) < 0.25
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # autocast: fp32 master weights


def test_compiled_run_learns_like_eager_and_saves_the_raw_model(tiny_dataset, tmp_path: Path) -> None:
    eager = fit(TrainConfig(**FAST), data=tiny_dataset)
    compiled = fit(TrainConfig(**{**FAST, "compile": "default"}), data=tiny_dataset, out_dir=tmp_path)
    assert compiled.final.test_error < 25.0
    assert abs(compiled.final.train_loss - eager.final.train_loss) < 0.1  # same math, other kernels
    assert type(compiled.model).__name__ == "CifarResNet"
    saved = load_checkpoint(tmp_path / CHECKPOINT_NAME)["model"]
    assert not any("_orig_mod" in key for key in saved)
    create_model("cifar_resnet", depth=8, num_classes=3).load_state_dict(saved)  # loads into an eager model
    # Compilation is an execution choice, not part of the experiment: an eager run resumes the compiled one.
    resumed = fit(TrainConfig(**{**FAST, "iterations": 65}), data=tiny_dataset, resume_from=tmp_path / CHECKPOINT_NAME)
    assert resumed.final.iteration == 65


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_never_waits_for_the_device(tiny_dataset) -> None:
    """The loop queues work only: a step that reads a value back would raise under sync debug mode "error"."""
    from resnet_core.data.augment import Normalizer
    from resnet_core.data.batches import LabelledImages, TrainBatches

    data = LabelledImages(tiny_dataset.train_images, tiny_dataset.train_labels).to(CUDA)
    batches = TrainBatches(data, Normalizer.fit(tiny_dataset.train_images).to(CUDA), 32, seed=0)
    step = TrainStep.create(create_model("cifar_resnet", depth=8, num_classes=3), Execution.resolve(CUDA))
    batches.batch(0)  # the epoch's order is drawn (and copied to the device) once per epoch
    torch.cuda.set_sync_debug_mode("error")
    try:
        for iteration in range(1, batches.batches_per_epoch):
            step.set_lr(0.1)
            step(*batches.batch(iteration))
    finally:
        torch.cuda.set_sync_debug_mode("default")
