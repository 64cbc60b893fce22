"""Small learnable image sets for fast engine tests: each class is a noisy colour pattern."""

from __future__ import annotations

from pathlib import Path

import torch

from resnet_core.data.sources import ImageDataset


def make_dataset(num_classes: int = 3, train: int = 192, test: int = 48, size: int = 16, seed: int = 0) -> ImageDataset:
    """uint8 images whose class decides a colour and a bright quadrant; the rest is noise."""
    generator = torch.Generator().manual_seed(seed)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(count) % num_classes
        labels = labels[torch.randperm(count, generator=generator)]
        images = torch.randint(0, 96, (count, 3, size, size), generator=generator)
        for label in range(num_classes):
            chosen = labels == label
            images[chosen, label % 3] += 100
            quadrant = label % 4
            rows = slice(0, size // 2) if quadrant < 2 else slice(size // 2, size)
            cols = slice(0, size // 2) if quadrant % 2 == 0 else slice(size // 2, size)
            images[chosen, :, rows, cols] += 50
        return images.clamp(0, 255).to(torch.uint8), labels.long()

    train_images, train_labels = draw(train)
    test_images, test_labels = draw(test)
    return ImageDataset(train_images, train_labels, test_images, test_labels,
                        tuple(f"class{k}" for k in range(num_classes)), "synthetic test set")


def write_image_tree(dataset: ImageDataset, root: Path) -> Path:
    """Write ``dataset`` as PNG files in the class-folder layout root/{train,test}/<class>/<k>.png."""

    from PIL import Image

    root = Path(root)
    for split, images, labels in (("train", dataset.train_images, dataset.train_labels),
                                  ("test", dataset.test_images, dataset.test_labels)):
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / dataset.classes[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:05d}.png")
    return root


def write_imagenet_tree(dataset: ImageDataset, root: Path, size: int | None = None) -> Path:
    """Write ``dataset`` as JPEG files in the ImageNet layout root/{train,val}/<wnid>/*.JPEG, with a
    LOC_synset_mapping.txt naming the classes; ``size`` resizes the images (nearest) first."""

    from PIL import Image

    root = Path(root)
    wnids = [f"n{index:08d}" for index in range(dataset.num_classes)]
    for split, images, labels in (("train", dataset.train_images, dataset.train_labels),
                                  ("val", dataset.test_images, dataset.test_labels)):
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / wnids[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(image.permute(1, 2, 0).numpy())
            if size is not None:
                picture = picture.resize((size, size), Image.NEAREST)
            picture.save(folder / f"{wnids[int(label)]}_{index}.JPEG", quality=95)
    mapping = "".join(f"{wnid} {name}, other name\n" for wnid, name in zip(wnids, dataset.classes))
    (root / "LOC_synset_mapping.txt").write_text(mapping)
    return root
