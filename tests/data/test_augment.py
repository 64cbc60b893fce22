"""Paper preprocessing (Sec. 4.2) on batched tensors: per-pixel mean, pad-4 random crops, flips,
nothing at test time; the hold-out split; the iteration-indexed, rank-sharded training stream."""

from __future__ import annotations

import pytest
import torch

from resnet_core import ConfigError
from resnet_core.data.augment import Normalizer, random_crop_flip
from resnet_core.data.batches import LabelledImages, TrainBatches, eval_batches, holdout_split


def _position_images(batch: int, size: int = 8) -> torch.Tensor:
    """Float images whose pixel (c, y, x) holds a unique positive code, so a crop reveals its offset."""
    c, y, x = torch.meshgrid(torch.arange(3), torch.arange(size), torch.arange(size), indexing="ij")
    codes = (c * 10_000 + (y + 1) * 100 + (x + 1)).float()
    return codes.expand(batch, -1, -1, -1).clone()


def _find_window(crop: torch.Tensor, padded: torch.Tensor, padding: int) -> tuple[int, int, bool] | None:
    size = crop.shape[-1]
    for oy in range(2 * padding + 1):
        for ox in range(2 * padding + 1):
            window = padded[:, oy : oy + size, ox : ox + size]
            if torch.equal(crop, window):
                return oy, ox, False
            if torch.equal(crop, window.flip(-1)):
                return oy, ox, True
    return None


def test_crops_are_windows_of_the_zero_padded_image_with_offsets_in_range() -> None:
    images = _position_images(400)
    out = random_crop_flip(images, padding=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images[0], (4, 4, 4, 4))
    found = [_find_window(crop, padded, 4) for crop in out]
    assert all(window is not None for window in found)  # every crop is a (possibly flipped) window
    offsets_y = {w[0] for w in found}
    offsets_x = {w[1] for w in found}
    assert offsets_y == set(range(9)) and offsets_x == set(range(9))  # all of 0..8 drawn, none outside
    flipped = sum(w[2] for w in found) / len(found)
    assert 0.4 < flipped < 0.6
    border = out[torch.tensor([w[0] == 0 for w in found])]  # crops touching the padding hold zeros
    assert torch.all(border[:, :, :4, :] == 0)


def test_each_image_draws_its_own_crop() -> None:
    out = random_crop_flip(_position_images(64), padding=4, generator=torch.Generator().manual_seed(1))
    assert len({tuple(img.flatten().tolist()) for img in out}) > 20


def test_pixel_mean_normalizer_subtracts_the_training_mean_image() -> None:
    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    normalizer = Normalizer.fit(images, "pixel_mean")
    expected_mean = images.double().div(255).mean(0)
    torch.testing.assert_close(normalizer.mean.double(), expected_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(normalizer(images).double().mean(0), torch.zeros(3, 4, 4, dtype=torch.float64),
                               atol=1e-5, rtol=0)


def test_channel_normalizer_gives_zero_mean_unit_std_per_channel() -> None:
    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    x = Normalizer.fit(images, "channel")(images)
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="unknown normalization"):
        Normalizer.fit(images, "zca")


def _data(n: int = 100) -> LabelledImages:
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8)
    return LabelledImages(images, torch.arange(n) % 10)


def test_test_time_batches_are_the_original_images() -> None:
    data = _data()
    normalizer = Normalizer.fit(data.images)
    batches = list(eval_batches(data, normalizer, batch_size=30))
    inputs = torch.cat([x for x, _ in batches])
    torch.testing.assert_close(inputs, normalizer(data.images))  # no crop, no flip
    assert torch.equal(torch.cat([y for _, y in batches]), data.labels)


def test_training_stream_is_a_function_of_the_iteration() -> None:
    data = _data()
    normalizer = Normalizer.fit(data.images)
    a = TrainBatches(data, normalizer, 20, seed=3)
    b = TrainBatches(data, normalizer, 20, seed=3)
    for iteration in (7, 0, 3, 7):  # any order, any object: the same batch
        xa, ya = a.batch(iteration)
        xb, yb = b.batch(iteration)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    epoch = torch.cat([a.indices(i) for i in range(a.batches_per_epoch)])
    assert sorted(epoch.tolist()) == list(range(100))  # one epoch visits every image once
    assert not torch.equal(a.indices(0), a.indices(a.batches_per_epoch))  # reshuffled each epoch
    x_plain, _ = TrainBatches(data, normalizer, 20, seed=3, augment=False).batch(0)
    torch.testing.assert_close(x_plain, normalizer(data.images[a.indices(0)]))


def test_ranks_take_disjoint_parts_of_each_global_batch() -> None:
    data = _data()
    normalizer = Normalizer.fit(data.images)
    single = TrainBatches(data, normalizer, 20, seed=5)
    ranks = [TrainBatches(data, normalizer, 20, seed=5, rank=r, world_size=2) for r in range(2)]
    for iteration in range(8):
        parts = [rank.indices(iteration) for rank in ranks]
        assert len(parts[0]) == len(parts[1]) == 10
        assert not set(parts[0].tolist()) & set(parts[1].tolist())
        assert torch.equal(torch.cat(parts), single.indices(iteration))
    with pytest.raises(ConfigError, match="does not divide among 3 workers"):
        TrainBatches(data, normalizer, 20, seed=5, rank=0, world_size=3)


def test_holdout_split_is_fixed_disjoint_and_complete() -> None:
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 3, 2, 2).contiguous()
    labels = torch.arange(100)
    train, val = holdout_split(images, labels, 10)
    again, val_again = holdout_split(images, labels, 10)
    assert len(train) == 90 and val is not None and len(val) == 10
    assert torch.equal(val.labels, val_again.labels)
    assert sorted(train.labels.tolist() + val.labels.tolist()) == list(range(100))
    assert torch.equal(train.images[:, 0, 0, 0].long(), train.labels)  # images stay with their labels
    assert holdout_split(images, labels, 0)[1] is None
    with pytest.raises(ConfigError, match="leaves no training images"):
        holdout_split(images, labels, 100)
