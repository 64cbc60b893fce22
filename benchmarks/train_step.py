"""Train-step time (forward + backward + SGD update) of registered models on one device.

    python benchmarks/train_step.py --models resnet20 resnet56 --batch-size 128 --device cpu
    python benchmarks/train_step.py --models resnet18 resnet50 --batch-size 32 --device cpu

Synthetic input at each model's natural size (32x32 for CIFAR nets, 224x224 for ImageNet nets; ``--image-size``
overrides), so the model is the bottleneck, not data. Warm-up steps are discarded; each model is
timed in ``--runs`` runs of ``--steps`` steps; the figures are mean +- std over runs. On CUDA, timing uses
CUDA events after synchronising.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import append_results, environment  # noqa: E402
from resnet_core import count_parameters, create_model, model_info  # noqa: E402


def time_steps(model: torch.nn.Module, batch: int, steps: int, device: torch.device, size: int = 32) -> float:
    """Seconds per training step on ``size`` x ``size`` inputs, averaged over ``steps`` steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    inputs = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=None, help="input side (default: the model's own)")
    args = parser.parse_args()
    device = torch.device(args.device)
    env = environment(device)
    rows = []
    for name in args.models:
        model = create_model(name).to(device).train()
        size = args.image_size or model_info(name).input_size
        time_steps(model, args.batch_size, args.warmup, device, size)
        runs = [time_steps(model, args.batch_size, args.steps, device, size) for _ in range(args.runs)]
        mean, std = statistics.mean(runs), statistics.stdev(runs) if len(runs) > 1 else 0.0
        row = {"benchmark": "train_step", "model": name, "params": count_parameters(model),
               "batch_size": args.batch_size, "image_size": size, "steps_per_run": args.steps, "runs": args.runs,
               "seconds_per_step_mean": mean, "seconds_per_step_std": std,
               "images_per_second": args.batch_size / mean, **env}
        rows.append(row)
        print(f"{name:>12} {size:>4}px  {mean * 1000:8.1f} +- {std * 1000:5.1f} ms/step  "
              f"{args.batch_size / mean:8.0f} images/s  ({args.runs} runs x {args.steps} steps, {device})")
    print(f"written to {append_results('train_step', rows)}")


if __name__ == "__main__":
    main()
