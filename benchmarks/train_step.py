"""Train-step throughput (forward + backward + SGD update) of registered models: eager vs compiled, fp32 vs bf16.

    python benchmarks/train_step.py --device cpu
    python benchmarks/train_step.py --device cpu --models resnet20 --variants reference compiled-fp32
    python benchmarks/train_step.py --device cuda --models all
    python benchmarks/train_step.py --device cuda --models resnet50 --variants reference eager-bf16 graphs-bf16

Every variant runs the engine's own step (:class:`resnet_core.engine.step.TrainStep`: cross-entropy, backward,
the paper's SGD with lr 0.1, momentum 0.9, weight decay 1e-4), so the figures are those of training. Variants
differ only in how the step executes (:class:`~resnet_core.engine.step.Execution`):

    reference       eager, fp32, NCHW, multi-tensor SGD: the baseline every ratio is against
    eager-fp32      the engine's defaults (channels-last on CPU / CUDA, fused SGD on CUDA), eager
    eager-bf16      + bf16 autocast
    compiled-fp32   + torch.compile (mode "default", Inductor)
    compiled-bf16   + torch.compile and bf16 autocast
    graphs-bf16     + torch.compile (mode "reduce-overhead": CUDA graphs) and bf16 autocast; CUDA only

Input is synthetic (random images and labels, made once on the device), so the model is the bottleneck, not
data: the ImageNet "resnet50 training images/s at 224" figure here is the model-bound one. Images are at each
model's natural size (32 for CIFAR nets, 224 for ImageNet nets; ``--image-size`` overrides), labels over its
classes (10 / 1000). Default models: on CUDA every registered model of fixed depth (``--models all``), on
the CPU the shorter :data:`CPU_MODELS` (``--models all`` runs every one there too). Default batch: 128 for
CIFAR nets, 256 for ImageNet nets on CUDA and 16 on the CPU (``--cifar-batch``, ``--imagenet-batch``;
``--batch-size`` sets both).

Timing: each variant gets its own freshly built model (same seed, same weights) and is warmed up for
``--warmup`` steps (compilation happens there; those seconds are recorded as ``warmup_seconds``); then
``--runs`` runs of ``--steps`` steps each, timed by :func:`benchmarks.common.seconds_per_call`, which drains
the device's queue. Runs are interleaved (run 1 of every variant, then run 2, ...) so that slow drift of the
machine hits all variants alike. Figures: mean +- std over runs of seconds per step; images/s = batch / mean,
its +- the std of the per-run rates; ratio = reference mean / variant mean, its +- the std of the per-run
ratios (run i against run i). A variant that fails (a compile error, out of memory) prints one line and is
skipped. One JSON row per (model, variant) is appended to ``benchmarks/results/train_step.jsonl``.

Targets it measures: resnet50 at 224, bf16, at least 3,000 training images/s on one H200 (``eager-bf16`` /
``graphs-bf16`` rows); resnet20's step on the 2-core CPU at least 1.3x the reference (``ratio_vs_reference``).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import append_results, environment, seconds_per_call, spread
from resnet_core import count_parameters, create_model, list_models, model_info
from resnet_core.data.image_arrays import short_reason
from resnet_core.engine.step import Execution, TrainStep
from resnet_core.errors import ConfigError

CPU_MODELS = ("resnet20", "resnet56", "resnet110", "plain20", "resnet18", "resnet50")
"""The CPU's default models: CIFAR nets of three depths, a plain net, one basic- and one bottleneck-block
ImageNet net. ``--models all`` runs every registered model of fixed depth."""

SEED = 0


@dataclass(frozen=True)
class Variant:
    """One way of executing the same training step."""

    name: str
    compile: str = "none"
    bf16: bool = False
    reference: bool = False
    """Eager NCHW fp32 with the multi-tensor SGD kernel, whatever the device's defaults."""
    cuda_only: bool = False

    def execution(self, device: torch.device) -> Execution:
        if self.reference:
            return Execution.resolve(device, channels_last=False, fused_sgd=False)
        return Execution.resolve(device, compile=self.compile, bf16=self.bf16)


VARIANTS = {variant.name: variant for variant in (
    Variant("reference", reference=True),
    Variant("eager-fp32"),
    Variant("eager-bf16", bf16=True),
    Variant("compiled-fp32", compile="default"),
    Variant("compiled-bf16", compile="default", bf16=True),
    Variant("graphs-bf16", compile="reduce-overhead", bf16=True, cuda_only=True),
)}


def fixed_depth_models() -> list[str]:
    """Every registered model whose name fixes its depth (not the free-depth ``cifar_resnet`` / ``cifar_plain``)."""
    return [name for name in list_models() if "depth" in model_info(name).fixed]


def num_classes(name: str) -> int:
    info = model_info(name)
    return int({**info.options, **info.fixed}["num_classes"])


def free_memory(device: torch.device, *, compiled_code: bool = False) -> None:
    """Drop what a finished or failed variant left behind: Python garbage and cached CUDA blocks, and with
    ``compiled_code`` Dynamo's compiled code too (between models: a fresh recompile budget for the next)."""
    gc.collect()
    if compiled_code:
        torch.compiler.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Timed:
    """A variant's step under test and its measurements so far."""

    variant: Variant
    step: TrainStep
    work: Callable[[], object]
    warmup_seconds: float
    runs: list[float]


def warm_up(name: str, variant: Variant, device: torch.device, inputs: torch.Tensor, labels: torch.Tensor,
            warmup: int) -> Timed:
    """A fresh model (seed :data:`SEED`) in ``variant``'s step, after ``warmup`` untimed steps (compilation)."""
    torch.manual_seed(SEED)
    step = TrainStep.create(create_model(name), variant.execution(device))

    def work() -> object:
        return step(inputs, labels)

    start = time.perf_counter()
    seconds_per_call(work, warmup, device)
    return Timed(variant, step, work, time.perf_counter() - start, [])


def benchmark_model(name: str, variants: list[Variant], device: torch.device, batch: int, size: int,
                    args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time every variant on ``name``, runs interleaved; one result row per variant that ran to the end."""
    generator = torch.Generator().manual_seed(SEED)
    inputs = torch.randn(batch, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, num_classes(name), (batch,), generator=generator).to(device)
    timed: list[Timed] = []
    for variant in variants:
        failure = None
        try:
            timed.append(warm_up(name, variant, device, inputs, labels, args.warmup))
        except Exception as error:  # noqa: BLE001 -- report the variant and go on with the others
            failure = short_reason(error)
        if failure:  # out of the except block: the traceback, and the model its frames hold, are gone
            print(f"  {variant.name}: skipped, failed in warm-up ({failure})", flush=True)
            free_memory(device)
    for _ in range(args.runs):
        index = 0
        while index < len(timed):
            failure = None
            try:
                timed[index].runs.append(seconds_per_call(timed[index].work, args.steps, device))
            except Exception as error:  # noqa: BLE001
                failure = short_reason(error)
            if failure:
                print(f"  {timed.pop(index).variant.name}: skipped, failed while timed ({failure})", flush=True)
                free_memory(device)
            else:
                index += 1

    reference = next((entry for entry in timed if entry.variant.reference), None)
    rows = []
    for entry in timed:
        mean, std = spread(entry.runs)
        ratio = ratio_std = None
        if reference is not None:
            ratio = spread(reference.runs)[0] / mean
            ratio_std = spread([ref / own for ref, own in zip(reference.runs, entry.runs, strict=True)])[1]
        execution = entry.step.execution
        rows.append({
            "benchmark": "train_step", "model": name, "family": model_info(name).family,
            "params": count_parameters(entry.step.model), "variant": entry.variant.name,
            "execution": execution.describe(), "compile": execution.compile, "bf16": execution.bf16,
            "channels_last": execution.channels_last, "fused_sgd": execution.fused_sgd,
            "batch_size": batch, "image_size": size, "steps_per_run": args.steps, "runs": args.runs,
            "warmup_steps": args.warmup, "warmup_seconds": entry.warmup_seconds,
            "seconds_per_step_mean": mean, "seconds_per_step_std": std,
            "images_per_second": batch / mean, "images_per_second_std": spread([batch / s for s in entry.runs])[1],
            "ratio_vs_reference": ratio, "ratio_vs_reference_std": ratio_std,
        })
    return rows


def print_table(name: str, rows: list[dict[str, Any]], device: torch.device, batch: int, size: int,
                args: argparse.Namespace) -> None:
    params = f"{rows[0]['params'] / 1e6:.2f}M params, " if rows else ""
    print(f"{name}: {params}{size}x{size}, batch {batch}, {args.runs} runs x {args.steps} steps after "
          f"{args.warmup} warm-up, {device}")
    print(f"  {'variant':<14} {'ms/step':>17} {'images/s':>17} {'vs reference':>14} {'warm-up s':>10}  execution")
    for row in rows:
        ratio = "-" if row["ratio_vs_reference"] is None else f"{row['ratio_vs_reference']:.2f}x" + (
            "" if row["ratio_vs_reference_std"] is None else f" +- {row['ratio_vs_reference_std']:.2f}")
        print(f"  {row['variant']:<14} {row['seconds_per_step_mean'] * 1e3:8.1f} +- "
              f"{row['seconds_per_step_std'] * 1e3:6.1f} {row['images_per_second']:8.0f} +- "
              f"{row['images_per_second_std']:6.0f} {ratio:>14} {row['warmup_seconds']:10.1f}  {row['execution']}")
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"registered names, or 'all' (every fixed-depth model; the default on CUDA; "
                        f"CPU default: {' '.join(CPU_MODELS)})")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                        help="default: every variant the device runs (graphs-bf16 on CUDA only)")
    parser.add_argument("--cifar-batch", type=int, default=128, help="batch of CIFAR (32x32) models")
    parser.add_argument("--imagenet-batch", type=int, default=None,
                        help="batch of ImageNet (224x224) models (default: 256 on CUDA, 16 elsewhere)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="one batch for every model (overrides --cifar-batch and --imagenet-batch)")
    parser.add_argument("--image-size", type=int, default=None, help="input side (default: the model's own)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 20 CUDA, 3 else)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed run (default: 50 CUDA, 10 else)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per variant")
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.warmup = args.warmup if args.warmup is not None else 20 if cuda else 3
    args.steps = args.steps if args.steps is not None else 50 if cuda else 10
    args.imagenet_batch = args.imagenet_batch if args.imagenet_batch is not None else 256 if cuda else 16
    if args.batch_size is not None:
        args.cifar_batch = args.imagenet_batch = args.batch_size
    for flag in ("warmup", "steps", "runs", "cifar_batch", "imagenet_batch"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.models is None:
        models = fixed_depth_models() if cuda else list(CPU_MODELS)
    elif args.models == ["all"]:
        models = fixed_depth_models()
    else:
        models = args.models
        for name in models:
            try:
                model_info(name)  # fails now, with the valid names, not after an hour of timing
            except ConfigError as error:
                parser.error(str(error))
    names = args.variants or [name for name, variant in VARIANTS.items() if cuda or not variant.cuda_only]
    variants = []
    for name in names:
        if VARIANTS[name].cuda_only and not cuda:
            print(f"{name}: skipped, CUDA only (this run is on {device})")
        else:
            variants.append(VARIANTS[name])

    Execution.resolve(device).apply_threads()  # the variants' thread count, before the environment records it
    env = environment(device)
    print(f"train_step: {', '.join(variant.name for variant in variants)} on {device} "
          f"({env.get('gpu') or env['cpu']}, {env['torch_threads']} threads), torch {env['torch']}\n", flush=True)
    rows = []
    for name in models:
        info = model_info(name)
        batch = args.imagenet_batch if info.family == "imagenet" else args.cifar_batch
        size = args.image_size or info.input_size
        print(f"{name} ...", flush=True)
        model_rows = [{**row, **env} for row in benchmark_model(name, variants, device, batch, size, args)]
        print_table(name, model_rows, device, batch, size, args)
        rows.extend(model_rows)
        free_memory(device, compiled_code=True)
    if rows:
        print(f"written to {append_results('train_step', rows)}")


if __name__ == "__main__":
    main()
