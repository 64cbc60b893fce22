"""CIFAR-10 training end to end: the engine against the pipeline most users run today (performance benchmark 2).

    python benchmarks/cifar_end_to_end.py --data PATH/cifar10-jpeg.tar.gz          # or set RESNET_DATA_DIR
    python benchmarks/cifar_end_to_end.py --device cuda --iterations 500 --full-schedule
    python benchmarks/cifar_end_to_end.py --iterations 5 --runs 2 --warmup 2 --variants fp32 bf16  # a quick check

Both pipelines train the same architecture (``resnet20`` of Sec. 4.2 unless ``--arch``) with the paper's
optimiser (SGD, lr 0.1, momentum 0.9, weight decay 1e-4, batch 128) on the same machine for the same number
of iterations; the figure of merit is the ratio of their training throughputs.

* ``reference``: torchvision's ``CIFAR10`` dataset with per-image PIL transforms (RandomCrop 32 pad 4,
  RandomHorizontalFlip, ToTensor, Normalize with the per-channel mean/std computed from the training images)
  in a ``DataLoader`` (``--reference-workers`` worker processes, pinned memory on CUDA, persistent workers),
  feeding the model in eager fp32 NCHW with plain ``torch.optim.SGD``. Its loop is the classic one and never
  reads the loss back, so it is not penalised for a host-device sync. torchvision's class reads the official
  python pickles; they are written once from the loaded images into ``--cache-dir``.
* ``engine`` (one row per ``--variants`` entry): the engine's own path, :func:`cifar_inputs` (the set held on
  the device, normalised with the per-pixel mean and augmented as whole batches there) and :class:`TrainStep`
  with the :class:`Execution` the variant names: ``fp32`` (engine defaults: channels-last fp32 eager), ``bf16``
  (bf16 autocast), ``compiled`` (``torch.compile``), ``compiled-bf16``, ``graphs-bf16`` (``reduce-overhead``:
  compile plus CUDA graphs, with bf16). Default: fp32 and bf16 on a CPU, all five on CUDA.

Each pipeline is warmed up for ``--warmup`` iterations (compilation happens there; its seconds are reported
separately), then timed in ``--runs`` runs of ``--iterations`` iterations, the device synchronised before and
after each run; figures are mean +- std over runs. The reference's loader keeps running across runs (a new
epoch iterator at each epoch's end) and is shut down before the engine is timed.

On a small CPU machine the reference's DataLoader workers compete with the training threads for the same
cores. That is the honest comparison there (it is what a user of that machine gets), but the ratio then
measures the input pipeline's CPU cost as much as the step's; on a GPU machine the workers run beside the
device. ``--full-schedule`` adds the paper's whole CIFAR schedule (64k iterations, batch 128, lr divided by
10 at 32k and 48k, Sec. 4.2) through :func:`resnet_core.fit` with ``--full-variant``, and reports its wall time
and final test error (the paper's ResNet-20: 8.75%, Table 6); ``--full-iterations`` shortens it for a check.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import append_results, data_file, environment, seconds_per_call, spread  # noqa: E402
from resnet_core import DataError, ImageDataset, TrainConfig, create_model, fit, load_image_dataset  # noqa: E402
from resnet_core.data.augment import Normalizer  # noqa: E402
from resnet_core.data.cache import resolve_cache_dir  # noqa: E402
from resnet_core.engine.distributed import current_group  # noqa: E402
from resnet_core.engine.fit import Callback  # noqa: E402
from resnet_core.engine.inputs import Inputs, cifar_inputs  # noqa: E402
from resnet_core.engine.step import Execution, TrainStep, affinity_cpus, default_threads  # noqa: E402

ARCHIVE = "cifar10-jpeg.tar.gz"
BENCHMARK = "cifar_end_to_end"
BATCH_SIZE = 128  # Sec. 4.2: "a mini-batch size of 128"
PAPER_ITERATIONS = 64_000  # Sec. 4.2: "terminate training at 64k iterations"
REFERENCE_VARIANT = "fp32-nchw-eager"
TRAIN_FILES = 5  # data_batch_1 .. data_batch_5, as the official python version


@dataclass(frozen=True)
class Variant:
    """How the engine executes a step (:class:`Execution`); none changes what it computes except bf16."""

    compile: str = "none"
    bf16: bool = False


VARIANTS: dict[str, Variant] = {
    "fp32": Variant(),
    "bf16": Variant(bf16=True),
    "compiled": Variant(compile="default"),
    "compiled-bf16": Variant(compile="default", bf16=True),
    "graphs-bf16": Variant(compile="reduce-overhead", bf16=True),
}


def default_variants(device: torch.device) -> list[str]:
    """All on CUDA; fp32 and bf16 on a CPU (Inductor's CPU kernels need a C compiler); fp32 elsewhere (MPS)."""
    if device.type == "cuda":
        return list(VARIANTS)
    return ["fp32", "bf16"] if device.type == "cpu" else ["fp32"]


def variant_config(name: str, arch: str, device: torch.device, **changes: Any) -> TrainConfig:
    """The paper's CIFAR recipe (TrainConfig defaults, Sec. 4.2) executed as variant ``name``."""
    variant = VARIANTS[name]
    return TrainConfig(arch=arch, device=str(device), compile=variant.compile, bf16=variant.bf16, **changes)


# ---------------------------------------------------------------------------------------------- reference


class ReferenceCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10 over pickles written by :func:`write_cifar_pickles`.

    Ours hold the same images in the official layout but are not byte-identical to the official files, so
    their MD5 sums differ from torchvision's list: with ``None`` as the checksum, torchvision's own
    ``check_integrity`` still requires every file to exist but skips the MD5 (for the batches and the meta
    file, which ``_load_meta`` checks separately).
    """

    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


def write_cifar_pickles(dataset: ImageDataset, root: Path) -> Path:
    """Write ``dataset`` as the official CIFAR-10 python version under ``root/cifar-10-batches-py``; return ``root``.

    Training images in their order, split over five ``data_batch_*`` files (10,000 each for CIFAR-10), the
    test images in ``test_batch``, class names in ``batches.meta``. Rows are 3,072 uint8 values, channel-major
    (1,024 red, then green, then blue, each row-major), as in the official files. Keys are ``str``, as the
    official (Python 2) pickles load under torchvision's ``encoding="latin1"``; ``bytes`` keys would not.
    The folder is written to a staging folder first and renamed, so a partial one is never read.
    """
    if dataset.train_images.shape[1:] != (3, 32, 32):
        raise DataError(f"the torchvision reference reads 32x32 CIFAR images; these are "
                        f"{tuple(dataset.train_images.shape[2:])}")
    folder = root / ReferenceCIFAR10.base_folder
    if folder.is_dir():
        return root
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        train_parts = np.array_split(np.arange(len(dataset.train_labels)), TRAIN_FILES)
        for number, (name, _) in enumerate(ReferenceCIFAR10.train_list, start=1):
            _dump(staging / name, _batch(dataset.train_images, dataset.train_labels, train_parts[number - 1],
                                         f"training batch {number} of {TRAIN_FILES}"))
        test_index = np.arange(len(dataset.test_labels))
        _dump(staging / ReferenceCIFAR10.test_list[0][0],
              _batch(dataset.test_images, dataset.test_labels, test_index, "testing batch 1 of 1"))
        _dump(staging / ReferenceCIFAR10.meta["filename"],
              {"label_names": list(dataset.classes), "num_cases_per_batch": len(train_parts[0]), "num_vis": 3072})
        os.replace(staging, folder)
    except OSError:
        if not folder.is_dir():  # another process may have written the same folder meanwhile
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _batch(images: torch.Tensor, labels: torch.Tensor, index: np.ndarray, title: str) -> dict[str, Any]:
    """One official batch dictionary of the images at ``index``."""
    rows = images.numpy()[index].reshape(len(index), -1)
    return {"batch_label": title, "labels": labels.numpy()[index].tolist(), "data": rows,
            "filenames": [f"image_{int(i):05d}.png" for i in index]}


def _dump(path: Path, value: dict[str, Any]) -> None:
    with path.open("wb") as stream:
        pickle.dump(value, stream, protocol=2)


def reference_root(dataset: ImageDataset, cache_root: Path) -> Path:
    """The folder (under ``cache_root``) holding torchvision's files for ``dataset``, written on first use.

    Named by a digest of the images and labels, so a changed dataset never reads stale pickles.
    """
    digest = hashlib.blake2b(digest_size=10)
    for tensor in (dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels):
        digest.update(memoryview(tensor.contiguous().numpy()).cast("B"))
    return write_cifar_pickles(dataset, cache_root / f"torchvision-cifar10-{digest.hexdigest()}")


def channel_statistics(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training images in [0, 1], the ``Normalize`` arguments users pass.

    Computed from these images rather than copied from the usual constants (0.4914, 0.4822, 0.4465) /
    (0.2470, 0.2435, 0.2616): this copy is JPEG-compressed, so its statistics differ slightly.
    """
    normalizer = Normalizer.fit(images, "channel")
    assert normalizer.std is not None
    return normalizer.mean.flatten().tolist(), normalizer.std.flatten().tolist()


def default_reference_workers() -> int:
    """DataLoader workers of the reference pipeline when none are asked for: min(4, CPUs of this process)."""
    return min(4, affinity_cpus() or os.cpu_count() or 1)


def reference_loader(root: Path, mean: list[float], std: list[float], workers: int, device: torch.device
                     ) -> DataLoader:
    """The common torchvision pipeline: per-image PIL augmentation (Sec. 4.2's pad-4 crop and flip) in workers."""
    augment = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    dataset = ReferenceCIFAR10(str(root), train=True, transform=augment)
    return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, drop_last=True, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)


class EpochStream:
    """Batches of ``loader`` without end: a new epoch iterator whenever one is exhausted."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self._iterator: Iterator[Any] = iter(loader)

    def __next__(self) -> Any:
        try:
            return next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.loader)
            return next(self._iterator)


def reference_step(model: torch.nn.Module, device: torch.device) -> Callable[[Any], None]:
    """The classic loop body: move the batch, cross-entropy, zero_grad, backward, SGD step (fp32, NCHW)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def train(batch: Any) -> None:
        inputs, labels = batch
        inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return train


# ---------------------------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Measurement:
    """Iterations per second of each timed run of one pipeline, and the seconds its warm-up took."""

    pipeline: str
    variant: str
    warmup_seconds: float
    rates: list[float]
    description: str

    @property
    def rate(self) -> tuple[float, float]:
        """(mean, std) iterations per second over runs."""
        return spread(self.rates)


def measure(work: Callable[[], object], warmup: int, iterations: int, runs: int, device: torch.device
            ) -> tuple[float, list[float]]:
    """(warm-up seconds, iterations per second of each run) of ``work`` (one training iteration)."""
    warmup_seconds = seconds_per_call(work, warmup, device) * warmup if warmup else 0.0
    return warmup_seconds, [1.0 / seconds_per_call(work, iterations, device) for _ in range(runs)]


def measure_reference(dataset: ImageDataset, arch: str, cache_root: Path, workers: int, device: torch.device,
                      counts: tuple[int, int, int]) -> Measurement:
    """Time the torchvision pipeline; its workers are shut down before this returns."""
    mean, std = channel_statistics(dataset.train_images)
    loader = reference_loader(reference_root(dataset, cache_root), mean, std, workers, device)
    torch.manual_seed(0)
    model = create_model(arch, num_classes=dataset.num_classes).to(device).train()
    train = reference_step(model, device)
    stream = EpochStream(loader)
    warmup_seconds, rates = measure(lambda: train(next(stream)), *counts, device)
    del stream, loader, train
    gc.collect()  # ends the persistent workers, so that they do not share the cores with what follows
    return Measurement("reference", REFERENCE_VARIANT, warmup_seconds, rates,
                       f"torchvision CIFAR10 + PIL transforms, DataLoader({workers} workers), eager fp32 NCHW")


def measure_engine(name: str, inputs: Inputs, arch: str, device: torch.device, counts: tuple[int, int, int]
                   ) -> Measurement:
    """Time the engine's step over its on-device CIFAR batches, executed as variant ``name``."""
    execution = Execution.for_config(variant_config(name, arch, device), device)
    torch.compiler.reset()  # each compiled variant pays its own compilation in its warm-up
    torch.manual_seed(0)
    step = TrainStep.create(create_model(arch, num_classes=inputs.num_classes), execution)
    iteration = itertools.count()
    warmup_seconds, rates = measure(lambda: step(*inputs.train.batch(next(iteration))), *counts, device)
    return Measurement("engine", name, warmup_seconds, rates, execution.describe())


def full_schedule(dataset: ImageDataset, arch: str, name: str, device: torch.device, iterations: int, *,
                  callbacks: Sequence[Callback] = (), **changes: Any) -> dict[str, Any]:
    """The paper's whole CIFAR schedule (Sec. 4.2) through :func:`resnet_core.fit`; milestones scale with
    ``iterations`` (half and three quarters, as 32k and 48k of 64k). ``callbacks`` see each evaluation as it
    happens; ``changes`` are further TrainConfig fields (a smaller batch for a quick check)."""
    schedule = {} if iterations == PAPER_ITERATIONS else {
        "iterations": iterations, "milestones": (iterations // 2, iterations * 3 // 4)}
    config = variant_config(name, arch, device, eval_every=min(4000, iterations), checkpoint_every=PAPER_ITERATIONS,
                            **schedule, **changes)
    result = fit(config, data=dataset, callbacks=callbacks)
    final = result.final
    return {"pipeline": "engine-full-schedule", "variant": name, "arch": arch, "iterations": config.iterations,
            "milestones": list(config.milestones), "batch_size": config.batch_size,
            "wall_seconds": result.wall_seconds, "test_error": final.test_error, "train_error": final.train_error,
            "iterations_per_second": config.iterations / result.wall_seconds}


# ---------------------------------------------------------------------------------------------- output


def result_rows(measurements: list[Measurement], iterations: int, runs: int, warmup: int) -> list[dict[str, Any]]:
    """One row per measurement, with its ratio of images per second to the reference's."""
    reference = next((m.rate[0] for m in measurements if m.pipeline == "reference"), None)
    rows = []
    for m in measurements:
        mean, std = m.rate
        rows.append({"pipeline": m.pipeline, "variant": m.variant, "execution": m.description,
                     "batch_size": BATCH_SIZE, "iterations_per_run": iterations, "runs": runs,
                     "warmup_iterations": warmup, "warmup_seconds": m.warmup_seconds,
                     "iterations_per_second_mean": mean, "iterations_per_second_std": std,
                     "images_per_second_mean": mean * BATCH_SIZE, "images_per_second_std": std * BATCH_SIZE,
                     "ratio_vs_reference": None if reference is None else mean / reference})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'pipeline':<10} {'variant':<16} {'iterations/s':>17} {'images/s':>19} {'vs reference':>13} "
          f"{'warm-up s':>10}  execution")
    for row in rows:
        ratio = row["ratio_vs_reference"]
        print(f"{row['pipeline']:<10} {row['variant']:<16} "
              f"{row['iterations_per_second_mean']:8.2f} +- {row['iterations_per_second_std']:5.2f} "
              f"{row['images_per_second_mean']:9.0f} +- {row['images_per_second_std']:6.0f} "
              f"{'-' if ratio is None else f'{ratio:.2f}x':>13} {row['warmup_seconds']:10.1f}  {row['execution']}")


# ---------------------------------------------------------------------------------------------- command line


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help=f"{ARCHIVE} or any layout resnet_core reads (default: "
                        f"$RESNET_DATA_DIR/{ARCHIVE})")
    parser.add_argument("--cache-dir", default=None, help="decoded images and torchvision's pickles (default: "
                        "$RESNET_CORE_CACHE or ~/.cache/resnet_core)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    parser.add_argument("--arch", default="resnet20", help="a registered CIFAR model (Sec. 4.2)")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per timed run (default: 100 "
                        "on a CPU, 500 on CUDA)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations first (compilation included)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                        help="engine variants (default: fp32 bf16 on a CPU, all on CUDA)")
    parser.add_argument("--reference-workers", type=int, default=None,
                        help="DataLoader workers of the reference (default: min(4, CPUs of this process))")
    parser.add_argument("--full-schedule", action="store_true", help="also train the paper's whole schedule")
    parser.add_argument("--full-variant", choices=list(VARIANTS), default=None,
                        help="variant of the full schedule (default: graphs-bf16 on CUDA, fp32 elsewhere)")
    parser.add_argument("--full-iterations", type=int, default=PAPER_ITERATIONS,
                        help="shorten the full schedule for a check (milestones scale with it)")
    args = parser.parse_args()
    for name in ("iterations", "runs"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name} must be a positive integer")
    if args.warmup < 0 or (args.reference_workers is not None and args.reference_workers < 0):
        parser.error("--warmup and --reference-workers must be >= 0")
    if args.full_iterations < 4:
        parser.error("--full-iterations must be at least 4 (its milestones are at 1/2 and 3/4)")
    return args


def fail(message: str) -> NoReturn:
    """End with one line on stderr and exit status 2 (no traceback)."""
    print(f"{BENCHMARK}: {message}", file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    path = data_file(args.data, ARCHIVE)
    if path is None:
        fail(f"pass --data PATH/{ARCHIVE} or set RESNET_DATA_DIR to the folder holding {ARCHIVE}")
    if not path.exists():
        fail(f"no CIFAR-10 data at {str(path)!r}: pass --data PATH/{ARCHIVE} or set RESNET_DATA_DIR")
    try:
        dataset = load_image_dataset(path, download=False, cache_dir=args.cache_dir)
    except DataError as error:
        fail(str(error))
    torch.set_num_threads(default_threads() or torch.get_num_threads())  # the engine's choice, for both pipelines
    iterations = args.iterations or (500 if device.type == "cuda" else 100)
    cpus = affinity_cpus() or os.cpu_count() or 1
    workers = default_reference_workers() if args.reference_workers is None else args.reference_workers
    counts = (args.warmup, iterations, args.runs)
    env = {"benchmark": BENCHMARK, **environment(device), "arch": args.arch, "cpus": cpus,
           "reference_workers": workers}
    print(f"{dataset.description}\n{args.arch} on {device}, batch {BATCH_SIZE}, {args.runs} runs x {iterations} "
          f"iterations after {args.warmup} warm-up; reference: {workers} DataLoader workers", flush=True)
    measurements = [measure_reference(dataset, args.arch, resolve_cache_dir(args.cache_dir), workers, device, counts)]
    inputs = cifar_inputs(TrainConfig(arch=args.arch, device=str(device)), dataset, current_group(), device)
    for name in args.variants or default_variants(device):
        measurements.append(measure_engine(name, inputs, args.arch, device, counts))
    del inputs
    rows = [{**row, **env} for row in result_rows(measurements, iterations, args.runs, args.warmup)]
    print_table(rows)
    if args.full_schedule:
        name = args.full_variant or ("graphs-bf16" if device.type == "cuda" else "fp32")
        print(f"full schedule: {args.arch}, {args.full_iterations} iterations, variant {name} ...", flush=True)
        full = full_schedule(dataset, args.arch, name, device, args.full_iterations)
        print(f"full schedule: {full['iterations']} iterations in {full['wall_seconds']:.1f} s "
              f"({full['iterations_per_second']:.1f} iterations/s), final test error {full['test_error']:.2f}%")
        rows.append({**full, **env})
    print(f"written to {append_results(BENCHMARK, rows)}")


if __name__ == "__main__":
    main()
