"""The ImageNet input pipeline (paper Sec. 3.4): class-folder scanning, decoding, the per-sample dataset, the
paper's and torchvision's augmentation presets, 10-crop testing and the per-pixel mean."""

from __future__ import annotations

import io
import logging
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from archive_writers import tar_folder
from PIL import Image
from torch.utils.data import DataLoader

from resnet_core.data import imagenet
from resnet_core.data.imagenet import (
    CorruptImageError,
    ImageFolderDataset,
    ImageFolderIndex,
    collate_skipping,
    read_image,
    scan_image_folders,
)
from resnet_core.data.imagenet_transforms import (
    PCA_EIGVAL,
    PCA_EIGVEC,
    PRESETS,
    ImageSizes,
    Lighting,
    RandomShortSideResize,
    eval_transform,
    pixel_mean,
    train_transform,
)
from resnet_core.errors import ConfigError, DataError

WNIDS = ("n02", "n01", "n03")  # written out of order: labels must follow the sorted wnids
MAPPING = "n01 goldfish, Carassius auratus\nn02 golden retriever\nn03 tabby, tabby cat\n"
SIZES_64 = ImageSizes.scaled(64)


def save_image(path: Path, pixels: np.ndarray | tuple[int, int, int], size: tuple[int, int] = (20, 16),
               fmt: str = "JPEG", mode: str = "RGB") -> Path:
    """Write an image file: ``pixels`` (H, W, 3) uint8, or one colour at ``size`` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels) if isinstance(pixels, np.ndarray) else Image.new("RGB", size, pixels)
    image.convert(mode).save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def write_tree(root: Path, mapping: bool = True, train: int = 2, val: int = 1,
               colours: dict[str, tuple[int, int, int]] | None = None, fmt: str = "JPEG") -> Path:
    """train/<wnid>/<wnid>_<k>.JPEG and val/<wnid>/val_<k>.JPEG of small one-colour images."""
    suffix = {"JPEG": ".JPEG", "PNG": ".png"}[fmt]
    for number, wnid in enumerate(WNIDS):
        colour = (colours or {}).get(wnid, (40 * number, 100, 200 - 40 * number))
        for k in range(train):
            save_image(root / "train" / wnid / f"{wnid}_{k}{suffix}", colour, size=(20 + k, 16), fmt=fmt)
        for k in range(val):
            save_image(root / "val" / wnid / f"val_{number * 10 + k}{suffix}", colour, fmt=fmt)
    if mapping:
        (root / "LOC_synset_mapping.txt").write_text(MAPPING)
    return root


def one_line(excinfo: pytest.ExceptionInfo[Exception]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    return message


def random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# --- scanning -------------------------------------------------------------------------------------------------

def test_scan_lists_sorted_classes_labels_and_mapped_names(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tiny", train=3, val=2)
    save_image(root / "train" / "n01" / "extra.jpg", (1, 2, 3))  # other suffixes, any case
    save_image(root / "train" / "n01" / "other.PNG", (1, 2, 3), fmt="PNG")
    (root / "train" / "n01" / "notes.txt").write_text("not an image")
    (root / "train" / "n01" / ".hidden.JPEG").write_bytes(b"")
    index = scan_image_folders(root)
    assert index.root == root
    assert index.classes == ("n01", "n02", "n03")
    assert index.class_names == ("goldfish", "golden retriever", "tabby")
    assert len(index.train) == 11 and len(index.val) == 6
    assert [path for path, _ in index.train] == sorted(path for path, _ in index.train)
    assert index.train[0] == ("train/n01/extra.jpg", 0)
    assert ("train/n01/other.PNG", 0) in index.train
    for split in (index.train, index.val):
        for path, label in split:
            assert (root / path).is_file()
            assert path.split("/")[1] == index.classes[label]
    assert "11 train / 6 val" in index.description and "\n" not in index.description


def test_scan_accepts_the_single_subfolder_and_names_classes_by_wnid_without_mapping(tmp_path: Path) -> None:
    write_tree(tmp_path / "data" / "tiny", mapping=False)
    index = scan_image_folders(tmp_path / "data")
    assert index.root == tmp_path / "data" / "tiny"
    assert index.class_names == index.classes == ("n01", "n02", "n03")
    assert "wnid" in index.description


def test_scan_shares_the_image_names_hidden_rule_and_root_of_the_cifar_tree_reader(tmp_path: Path) -> None:
    """Any suffix the CIFAR-style tree reader reads (BMP too), no AppleDouble ``._`` files, ``__MACOSX`` ignored."""
    root = write_tree(tmp_path / "data" / "tiny", mapping=False)
    (tmp_path / "data" / "__MACOSX" / "tiny").mkdir(parents=True)
    (tmp_path / "data" / "README.txt").write_text("not a folder")
    bmp = save_image(root / "train" / "n01" / "extra.BMP", (5, 6, 7), fmt="BMP")
    (root / "train" / "n01" / "._extra.BMP").write_bytes(b"metadata")
    index = scan_image_folders(tmp_path / "data")
    assert index.root == root
    assert ("train/n01/extra.BMP", 0) in index.train and len(index.train) == 7
    assert read_image(bmp)[:, 0, 0].tolist() == [5, 6, 7]


def test_scan_extracts_an_archive_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_tree(tmp_path / "src" / "tiny")
    archive = tar_folder(folder, tmp_path / "tiny.tar.gz")
    extractions: list[Path] = []
    extract = imagenet._extract_members
    monkeypatch.setattr(imagenet, "_extract_members", lambda *args: (extractions.append(args[1]), extract(*args)))
    first = scan_image_folders(archive, cache_dir=tmp_path / "cache")
    stamp = first.root.stat().st_mtime_ns
    second = scan_image_folders(archive, cache_dir=tmp_path / "cache")
    assert len(extractions) == 1 and "extracted earlier" in second.description
    assert second.root == first.root and first.root.stat().st_mtime_ns == stamp
    assert (tmp_path / "cache") in first.root.parents
    plain = scan_image_folders(folder)
    for index in (first, second):
        assert (index.classes, index.class_names, index.train, index.val) == \
            (plain.classes, plain.class_names, plain.train, plain.val)
    assert not list(first.root.parent.parent.glob(".tmp-*"))  # no staging folder left behind


def test_scan_rejects_unsafe_archive_members(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("tiny/train/n01/a.JPEG", "tiny/../../escaped.JPEG"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(DataError) as excinfo:
        scan_image_folders(archive, cache_dir=tmp_path / "cache")
    assert "escaped.JPEG" in one_line(excinfo) and "unsafe" in str(excinfo.value)
    assert not list(tmp_path.rglob("escaped.JPEG"))
    assert not [path for path in (tmp_path / "cache" / "extracted").iterdir()]  # nothing kept


def test_scan_flat_val_says_to_sort_into_wnid_folders(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tiny")
    save_image(root / "val" / "ILSVRC2012_val_00000001.JPEG", (0, 0, 0))
    with pytest.raises(DataError) as excinfo:
        scan_image_folders(root)
    assert "val/<wnid>/" in one_line(excinfo) and "LOC_val_solution.csv" in str(excinfo.value)


@pytest.mark.parametrize("case", ["missing", "no_train", "no_val", "val_only_class", "empty_class", "train_tars"])
def test_scan_errors_name_the_path_and_the_layout(tmp_path: Path, case: str) -> None:
    root = tmp_path / "tiny"
    if case == "missing":
        root = tmp_path / "nowhere"
    elif case == "no_train":
        save_image(root / "images" / "a.JPEG", (0, 0, 0))
    elif case == "no_val":
        save_image(root / "train" / "n01" / "a.JPEG", (0, 0, 0))
    elif case == "val_only_class":
        write_tree(root)
        save_image(root / "val" / "n09" / "val_9.JPEG", (0, 0, 0))
    elif case == "empty_class":
        write_tree(root)
        (root / "train" / "n04").mkdir()
    else:
        (root / "train").mkdir(parents=True)
        (root / "train" / "n01.tar").write_bytes(b"")
        (root / "val").mkdir()
    with pytest.raises(DataError) as excinfo:
        scan_image_folders(root)
    message = one_line(excinfo)
    expected = {"missing": ["nowhere", "train/<wnid>"], "no_train": ["tiny", "train/<wnid>"],
                "no_val": ["tiny", "val/<wnid>"], "val_only_class": ["n09"], "empty_class": ["n04", "no images"],
                "train_tars": ["n01.tar", "extract"]}[case]
    assert all(part in message for part in expected), message


# --- decoding -------------------------------------------------------------------------------------------------

def test_read_image_decodes_rgb_grayscale_cmyk_and_png_named_jpeg(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (12, 18, 3), dtype=np.uint8)
    png = read_image(save_image(tmp_path / "png.JPEG", pixels, fmt="PNG"))  # as in ImageNet: a PNG named .JPEG
    assert png.dtype == torch.uint8 and torch.equal(png, torch.from_numpy(pixels).permute(2, 0, 1))
    rgb = read_image(save_image(tmp_path / "rgb.JPEG", (200, 30, 90), size=(18, 12)))
    assert rgb.shape == (3, 12, 18) and (rgb.float().mean((1, 2)) - torch.tensor([200.0, 30, 90])).abs().max() < 3
    gray = read_image(save_image(tmp_path / "gray.JPEG", pixels, mode="L"))
    assert gray.shape == (3, 12, 18) and torch.equal(gray[0], gray[1]) and torch.equal(gray[0], gray[2])
    cmyk_path = tmp_path / "cmyk.JPEG"
    Image.new("CMYK", (18, 12), (10, 200, 30, 40)).save(cmyk_path, "JPEG")
    cmyk = read_image(cmyk_path)
    reference = torch.from_numpy(np.array(Image.open(cmyk_path).convert("RGB"))).permute(2, 0, 1)
    assert cmyk.shape == (3, 12, 18) and (cmyk.int() - reference.int()).abs().max() <= 2


@pytest.mark.parametrize("content", ["truncated", "garbage", "empty", "missing"])
def test_read_image_of_a_bad_file_is_a_one_line_corrupt_image_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / f"{content}.JPEG"
    if content != "missing":
        good = save_image(tmp_path / "good.JPEG", np.zeros((64, 64, 3), np.uint8)).read_bytes()
        path.write_bytes({"truncated": good[:200], "garbage": b"not an image" * 20, "empty": b""}[content])
    with pytest.raises(CorruptImageError) as excinfo:
        read_image(path)
    assert isinstance(excinfo.value, DataError)
    message = one_line(excinfo)
    assert str(path) in message and "--skip-corrupt" in message


# --- the dataset ----------------------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path: Path) -> ImageFolderIndex:
    root = tmp_path / "tiny"
    for number, wnid in enumerate(WNIDS):
        for k in range(2):
            pixels = random_image(40 + 4 * k, 52, seed=10 * number + k).permute(1, 2, 0).numpy()
            save_image(root / "train" / wnid / f"{wnid}_{k}.JPEG", pixels)
        save_image(root / "val" / wnid / "val_0.JPEG", (number, 0, 0))
    return scan_image_folders(root)


def test_dataset_keyed_by_epoch_and_index_is_reproducible(tree: ImageFolderIndex) -> None:
    mean = torch.full((3, 64, 64), 0.5)
    dataset = ImageFolderDataset(tree.root, tree.train, train_transform("paper", SIZES_64, mean), seed=7)
    assert len(dataset) == 6
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first, label = dataset[2, 3]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left as it was
    torch.manual_seed(123)  # a different global state changes nothing
    again, _ = dataset[2, 3]
    other_epoch, _ = dataset[3, 3]
    other_seed, _ = ImageFolderDataset(tree.root, tree.train, dataset.transform, seed=8)[2, 3]
    assert first.shape == (3, 64, 64) and first.dtype == torch.float32 and label == tree.train[3][1]
    assert torch.equal(first, again)
    assert not torch.equal(first, other_epoch) and not torch.equal(first, other_seed)
    torch.manual_seed(5)
    plain_a, _ = dataset[3]
    torch.manual_seed(5)
    plain_b, _ = dataset[-3]  # an int key draws from the current random state
    assert torch.equal(plain_a, plain_b)
    with pytest.raises(IndexError):
        dataset[6]


def test_dataset_in_worker_processes_matches_the_main_process(tree: ImageFolderIndex) -> None:
    dataset = ImageFolderDataset(tree.root, tree.train, train_transform("torchvision", SIZES_64, None), seed=1)
    keys = [(4, index) for index in range(len(dataset))]
    loader = DataLoader(dataset, sampler=keys, batch_size=3, num_workers=2, collate_fn=collate_skipping)
    images = torch.cat([batch for batch, _, _ in loader])
    assert torch.equal(images, torch.stack([dataset[key][0] for key in keys]))


def test_dataset_skips_corrupt_files_only_when_asked(tree: ImageFolderIndex, caplog: pytest.LogCaptureFixture) -> None:
    bad = tree.root / tree.train[1][0]
    bad.write_bytes(b"\xff\xd8\xff broken")
    transform = eval_transform("torchvision", SIZES_64, None, crops=1)
    with pytest.raises(CorruptImageError) as excinfo:
        ImageFolderDataset(tree.root, tree.train, transform)[1]
    assert str(bad) in one_line(excinfo)
    skipping = ImageFolderDataset(tree.root, tree.train, transform, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger=imagenet.logger.name):
        batch = [skipping[0, index] for index in range(3)] + [skipping[1, 1]]
    assert batch[1] is None and batch[3] is None
    assert sum(str(bad) in record.getMessage() for record in caplog.records) == 1  # warned once per file
    images, labels, skipped = collate_skipping(batch)
    assert images.shape == (2, 3, 64, 64) and labels.dtype == torch.int64 and skipped == 2
    assert labels.tolist() == [tree.train[0][1], tree.train[2][1]]
    empty_images, empty_labels, all_skipped = collate_skipping([None, None])
    assert len(empty_images) == 0 and len(empty_labels) == 0 and all_skipped == 2


# --- presets --------------------------------------------------------------------------------------------------

def test_image_sizes_scale_the_papers_ratios_and_reject_impossible_sizes() -> None:
    assert ImageSizes.scaled(224) == ImageSizes() == ImageSizes(224, (256, 480), 256)
    assert ImageSizes.scaled(64) == ImageSizes(64, (73, 137), 73)
    for bad in ({"image_size": 0}, {"resize_range": (200, 480)}, {"resize_range": (300, 256)},
                {"eval_resize": 200}, {"image_size": 224.0}, {"resize_range": (256,)}):
        with pytest.raises(ConfigError) as excinfo:
            ImageSizes(**bad)  # type: ignore[arg-type]
        one_line(excinfo)


def test_train_presets_give_crops_of_the_right_shape_and_range() -> None:
    torch.manual_seed(0)
    images = [random_image(64, 64, 1), random_image(20, 50, 2)]  # the second is smaller than the crop
    mean = torch.full((3, 64, 64), 0.5)
    paper = train_transform("paper", SIZES_64, mean)
    torchvision = train_transform("torchvision", SIZES_64, None)
    for _ in range(20):
        for image in images:
            for transform, low, high in ((paper, -1.5, 1.5), (torchvision, -2.2, 2.7)):
                out = transform(image)
                assert out.shape == (3, 64, 64) and out.dtype == torch.float32
                assert low <= out.min() and out.max() <= high
    batch = torch.stack([paper(random_image(64, 64, seed)) for seed in range(32)])
    assert batch.mean().abs() < 0.02  # uniform pixels average 0.5, the mean image subtracted


def test_paper_preset_is_image_plus_one_lighting_shift_minus_mean_image() -> None:
    mean = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    transform = train_transform("paper", SIZES_64, mean)
    colour = torch.tensor([200, 30, 90], dtype=torch.uint8)
    image = colour[:, None, None].expand(3, 50, 70).clone()  # a flat image: resize, crop and flip keep it
    torch.manual_seed(1)
    shifts = []
    for _ in range(50):
        shift = transform(image) - (colour.float() / 255)[:, None, None] + mean
        per_channel = shift.mean((1, 2))
        assert (shift - per_channel[:, None, None]).abs().max() < 1e-5  # the same shift at every pixel
        shifts.append(per_channel)
    assert torch.stack(shifts).std(0).min() > 0  # drawn afresh per image


def test_lighting_shift_has_the_pca_spectrum() -> None:
    torch.manual_seed(0)
    shifts = Lighting()(torch.zeros(20_000, 3, 1, 1))[:, :, 0, 0]
    coefficients = shifts @ torch.tensor(PCA_EIGVEC)  # back to alpha * eigval along each eigenvector
    expected = 0.1 * torch.tensor(PCA_EIGVAL)
    assert torch.allclose(coefficients.std(0), expected, rtol=0.05)
    assert coefficients.mean(0).abs().max() < 0.005
    assert torch.equal(Lighting(alphastd=0)(torch.ones(3, 2, 2)), torch.ones(3, 2, 2))


def test_short_side_resize_samples_the_whole_range() -> None:
    resize = train_transform("paper", SIZES_64, torch.zeros(3, 64, 64)).transforms[0]
    assert isinstance(resize, RandomShortSideResize)
    torch.manual_seed(0)
    sides = []
    for _ in range(300):
        height, width = resize(random_image(40, 60)).shape[1:]
        sides.append(height)
        assert width == int(height * 60 / 40)
    assert set(sides) <= set(range(73, 138)) and min(sides) <= 76 and max(sides) >= 134
    # exact even where v2.RandomShortestSize truncates (98 * (256 / 98) = 255.99...)
    assert RandomShortSideResize(256, 256)(random_image(98, 120)).shape[1] == 256


@pytest.mark.parametrize("preset", PRESETS)
def test_ten_crop_eval_gives_corners_centre_and_their_flips(preset: str) -> None:
    sizes = ImageSizes(64, (72, 136), 72)  # even margins (8, 32), so the flipped centre crop is exact
    mean = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    image = random_image(72, 96)
    ten = eval_transform(preset, sizes, mean, crops=10)(image)
    one = eval_transform(preset, sizes, mean, crops=1)(image)
    assert ten.shape == (10, 3, 64, 64) and one.shape == (3, 64, 64)
    assert torch.equal(ten[4], one)  # the unflipped centre crop is the single view
    normalize = eval_transform(preset, ImageSizes(64, (64, 64), 64), mean, crops=1)
    assert torch.allclose(ten[0], normalize(image[:, :64, :64]))  # top-left corner
    assert torch.allclose(ten[3], normalize(image[:, 8:, 32:]))  # bottom-right corner
    unnormalized = ten + (mean if preset == "paper" else 0)  # flips commute with the channel normalisation
    flip = [1, 0, 3, 2, 4]  # the flipped image's top-left crop is the flip of the top-right one, etc.
    for index, source in enumerate(flip):
        assert torch.allclose(unnormalized[5 + index], unnormalized[source].flip(-1), atol=1e-6)


def test_presets_reject_bad_arguments() -> None:
    cases = [lambda: train_transform("alexnet", SIZES_64, None),
             lambda: eval_transform("resnet", SIZES_64, None, crops=1),
             lambda: train_transform("paper", SIZES_64, None),
             lambda: eval_transform("paper", SIZES_64, None, crops=1),
             lambda: train_transform("paper", SIZES_64, torch.zeros(3, 32, 32)),
             lambda: eval_transform("torchvision", SIZES_64, None, crops=5)]
    messages = []
    for case in cases:
        with pytest.raises(ConfigError) as excinfo:
            case()
        messages.append(one_line(excinfo))
    assert all(preset in messages[0] for preset in PRESETS)
    assert "10" in messages[-1]
    assert train_transform("torchvision", SIZES_64, torch.zeros(1)) is not None  # torchvision ignores the mean


# --- the per-pixel mean ---------------------------------------------------------------------------------------

def test_pixel_mean_of_flat_images_is_their_colour(tmp_path: Path) -> None:
    colours = {"n01": (10, 20, 30), "n02": (110, 120, 130), "n03": (250, 0, 128)}
    index = scan_image_folders(write_tree(tmp_path / "tiny", colours=colours, fmt="PNG"))
    mean = pixel_mean(index.root, index.train, SIZES_64)
    expected = torch.tensor(list(colours.values()), dtype=torch.float64).mean(0) / 255
    assert mean.shape == (3, 64, 64) and mean.dtype == torch.float32
    assert torch.allclose(mean, expected.float()[:, None, None].expand(3, 64, 64), atol=1e-6)
    one = pixel_mean(index.root, index.train, SIZES_64, limit=1, seed=3)  # a subset of one image
    assert any(torch.allclose(one, torch.tensor(colour)[:, None, None] / 255, atol=1e-6)
               for colour in colours.values())
    assert torch.equal(one, pixel_mean(index.root, index.train, SIZES_64, limit=1, seed=3))


@pytest.mark.parametrize("workers", [0, 2])
def test_pixel_mean_names_a_corrupt_image_on_one_line(tmp_path: Path, workers: int) -> None:
    index = scan_image_folders(write_tree(tmp_path / "tiny"))
    bad = index.root / index.train[3][0]
    bad.write_bytes(b"garbage")
    with pytest.raises(CorruptImageError) as excinfo:
        pixel_mean(index.root, index.train, SIZES_64, workers=workers)
    assert str(bad) in one_line(excinfo)


# --- real data ------------------------------------------------------------------------------------------------

def test_real_tiny_imagenet(imagenet_data_dir: Path, tmp_path: Path) -> None:
    index = scan_image_folders(imagenet_data_dir / "tiny-imagenet-10.tar.gz", cache_dir=tmp_path / "cache")
    assert len(index.classes) == 10 and len(index.train) == 5000 and len(index.val) == 500
    assert "goldfish" in index.class_names
    assert sorted(set(label for _, label in index.val)) == list(range(10))
    started = time.perf_counter()
    mean = pixel_mean(index.root, index.train, SIZES_64, limit=2000, workers=min(2, os.cpu_count() or 1))
    seconds = time.perf_counter() - started
    print(f"pixel_mean of 2000 tiny-imagenet-10 images at 64x64: {seconds:.2f} s")
    assert mean.shape == (3, 64, 64) and 0 <= mean.min() and mean.max() <= 1
    assert 0.35 < mean.mean() < 0.55
    dataset = ImageFolderDataset(index.root, index.val, eval_transform("paper", SIZES_64, mean, crops=10))
    images, labels, skipped = collate_skipping([dataset[number] for number in range(0, 500, 100)])
    assert images.shape == (5, 10, 3, 64, 64) and skipped == 0 and labels.tolist() == [0, 2, 4, 6, 8]
    assert images.mean().abs() < 0.15
