"""Per-core throughput of the ImageNet input pipeline (paper Sec. 3.4): read + decode + augment, one image at a time.

    python benchmarks/imagenet_input.py --data PATH/tiny-imagenet-10.tar.gz      # or set RESNET_DATA_DIR

What one DataLoader worker does per training sample: ``ImageFolderDataset[epoch, index]`` (file read,
torchvision decode, the preset's random transform under a per-sample seed), on one thread
(``torch.set_num_threads(1)``, as in a worker). Both train presets at the paper's sizes (224, shorter side in
[256, 480]) and scaled to 64 (``ImageSizes.scaled(64)``). Each configuration is warmed up on ``--warmup``
images, then timed in ``--runs`` runs over the same ``--images`` files; figures are mean +- std over runs.
``decode`` rows time :func:`read_image` alone.

The tiny-imagenet-10 files are 64x64 JPEGs of ~2 KB, so their decode is far cheaper than that of an ImageNet
training JPEG (~470x390, ~110 KB on average). ``--imagenet-sized`` adds rows for the same images upscaled to 500x375 and
re-encoded (JPEG quality 90) into a temporary folder: a smoother stand-in, so still somewhat optimistic.
The paper preset's mean image is a constant here (its values do not change the cost).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import append_results, data_file, environment  # noqa: E402
from resnet_core.data.imagenet import ImageFolderDataset, read_image, scan_image_folders  # noqa: E402
from resnet_core.data.imagenet_transforms import PRESETS, ImageSizes, train_transform  # noqa: E402

ARCHIVE = "tiny-imagenet-10.tar.gz"
IMAGENET_SIZE = (500, 375)  # width, height: the most common ImageNet training image size


def images_per_second(work: Callable[[int], object], count: int) -> float:
    """Images per second of ``work(i)`` for i in range(count)."""
    start = time.perf_counter()
    for index in range(count):
        work(index)
    return count / (time.perf_counter() - start)


def measure(work: Callable[[int], object], count: int, warmup: int, runs: int) -> tuple[float, float]:
    """(mean, std) images per second over ``runs`` timed runs, after ``warmup`` untimed images."""
    images_per_second(work, min(warmup, count))
    rates = [images_per_second(work, count) for _ in range(runs)]
    return statistics.mean(rates), statistics.stdev(rates) if runs > 1 else 0.0


def upscaled_copy(root: Path, samples: list[tuple[str, int]], folder: Path) -> list[tuple[str, int]]:
    """The images of ``samples`` resized to ImageNet's usual 500x375 and saved as JPEG (quality 90) in ``folder``."""
    copies = []
    for number, (path, label) in enumerate(samples):
        name = f"{number:05d}.JPEG"
        with Image.open(root / path) as image:
            image.convert("RGB").resize(IMAGENET_SIZE, Image.BICUBIC).save(folder / name, "JPEG", quality=90)
        copies.append((name, label))
    return copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help=f"{ARCHIVE} or its extracted folder (default: in "
                        "$RESNET_DATA_DIR)")
    parser.add_argument("--cache-dir", default=None, help="where the archive is extracted (default: the cache)")
    parser.add_argument("--images", type=int, default=500, help="training images per timed run")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: one DataLoader worker)")
    parser.add_argument("--imagenet-sized", action="store_true", help="also time 500x375 re-encoded copies")
    args = parser.parse_args()
    data = data_file(args.data, ARCHIVE)
    if data is None:
        parser.error(f"pass --data PATH/{ARCHIVE} or set RESNET_DATA_DIR to the folder holding it")
    torch.set_num_threads(args.threads)
    index = scan_image_folders(data, cache_dir=args.cache_dir)
    step = max(1, len(index.train) // args.images)  # spread over all classes
    samples = list(index.train[::step][: args.images])
    env = environment(torch.device("cpu"))
    sources = [("tiny-imagenet-10 64x64 JPEG", index.root, samples)]
    with tempfile.TemporaryDirectory() as scratch:
        if args.imagenet_sized:
            copies = upscaled_copy(index.root, samples, Path(scratch))
            sources.append(("tiny-imagenet-10 upscaled to 500x375, JPEG q90", Path(scratch), copies))
        rows = []
        for source, root, files in sources:
            decode_mean, decode_std = measure(lambda i: read_image(root / files[i][0]), len(files), args.warmup,
                                              args.runs)
            print(f"{source}: decode only  {decode_mean:7.0f} +- {decode_std:4.0f} images/s")
            rows.append({"benchmark": "imagenet_input", "stage": "decode", "source": source,
                         "images_per_run": len(files), "runs": args.runs, "images_per_second_mean": decode_mean,
                         "images_per_second_std": decode_std, **env})
            for sizes in (ImageSizes(), ImageSizes.scaled(64)):
                for preset in PRESETS:
                    mean_image = torch.full((3, sizes.image_size, sizes.image_size), 0.45)
                    dataset = ImageFolderDataset(root, files, train_transform(preset, sizes, mean_image), seed=0)
                    rate_mean, rate_std = measure(lambda i, d=dataset: d[0, i], len(files), args.warmup, args.runs)
                    print(f"{source}: {preset:>11} train {sizes.image_size:3d} (shorter side {sizes.resize_range}) "
                          f"{rate_mean:7.0f} +- {rate_std:4.0f} images/s  {1000 / rate_mean:6.2f} ms/image  "
                          f"({args.runs} runs x {len(files)} images, {args.threads} thread)")
                    rows.append({"benchmark": "imagenet_input", "stage": "decode+train_transform", "source": source,
                                 "preset": preset, "image_size": sizes.image_size,
                                 "resize_range": list(sizes.resize_range), "images_per_run": len(files),
                                 "runs": args.runs, "images_per_second_mean": rate_mean,
                                 "images_per_second_std": rate_std, "ms_per_image_mean": 1000 / rate_mean, **env})
    print(f"written to {append_results('imagenet_input', rows)}")


if __name__ == "__main__":
    main()
