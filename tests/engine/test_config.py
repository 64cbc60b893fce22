"""TrainConfig: paper defaults, validation with one-line messages, strict untyped input."""

from __future__ import annotations

import pytest

from resnet_core import ConfigError, TrainConfig


def test_defaults_are_the_paper_recipe() -> None:
    config = TrainConfig()
    assert (config.lr, config.momentum, config.weight_decay, config.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert config.iterations == 64_000 and config.milestones == (32_000, 48_000) and config.lr_decay == 0.1
    assert config.normalization == "pixel_mean" and config.augment and not config.bf16
    assert config.shortcut is None and config.warmup is None  # model / depth defaults: A, warm-up from 110


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": 0}, "lr must be > 0"),
        ({"lr": -0.1}, "lr must be > 0"),
        ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
        ({"momentum": 1.0}, "momentum must be in"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"iterations": 1.5}, "iterations must be of type int"),
        ({"milestones": [48000, 32000]}, "milestones must be increasing"),
        ({"milestones": "a,b"}, "milestones must be a list of integers"),
        ({"normalization": "zca"}, "unknown normalization 'zca'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"shortcut": "D"}, "unknown shortcut option 'D'"),
        ({"val_split": -1}, "val_split must be >= 0"),
        ({"learning_rate": 0.1}, "unknown config key learning_rate: valid keys are arch, depth"),
    ],
)
def test_invalid_values_fail_with_one_line(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        TrainConfig.from_dict(values)
    assert "\n" not in str(error.value)


def test_untyped_input_is_coerced_where_unambiguous() -> None:
    config = TrainConfig.from_dict({"lr": 1, "milestones": "100,200", "weight_decay": 0})
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.milestones == (100, 200) and config.weight_decay == 0.0


def test_json_round_trip(tmp_path) -> None:
    config = TrainConfig(arch="resnet56", shortcut="B", milestones=(10, 20), val_split=5000)
    config.save_json(tmp_path / "config.json")
    assert TrainConfig.load_json(tmp_path / "config.json") == config
    assert config.replace(lr=0.05).changes_from(config) == {"lr": (0.1, 0.05)}
