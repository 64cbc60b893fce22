"""TrainConfig: paper defaults, validation with one-line messages, strict untyped input."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from resnet_core import ConfigError, TrainConfig
from resnet_core.engine.config import IMAGENET_RECIPE, RESUMABLE_CHANGES, SECTIONS, field_specs, train_config_schema


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
        # A misspelt key names the closest field; a wrong type or an impossible value names what is accepted.
        ({"lr_decya": 0.5}, "^unknown config key lr_decya: did you mean lr_decay\\?$"),
        ({"batch_size": True}, r"^batch_size must be of type int, got True \(default: 128; ImageNet recipe: 256\)$"),
        ({"lr": "fast"}, r"^lr must be of type float, got 'fast' \(default: 0.1\)$"),
        ({"lr": float("inf")}, "^lr must be a finite number > 0, got inf"),
        ({"momentum": 1.5}, r"^momentum must be in \[0, 1\), got 1.5 \(default: 0.9\)$"),
        ({"lr_decay": 2}, r"^lr_decay must be in \(0, 1\], got 2"),
        ({"milestones": [100, True]}, "^milestones must be a list of integers, got \\[100, True\\]"),
        ({"compile": "fast"}, "^unknown compile mode 'fast': use one of none, default, reduce-overhead, max-autotune"),
        ({"normalization": 1}, "^unknown normalization 1: use one of pixel_mean, channel"),
        ({"warmup": 1}, "^warmup must be of type bool or None, got 1"),
        ({"device": "cuda:x"}, "^unknown device 'cuda:x': use auto, cpu, cuda, cuda:N or mps"),
        ({"threads": 0}, "^threads must be a positive number of CPU threads, got 0"),
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
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))  # what the CLI writes into a run
    assert TrainConfig.load_json(tmp_path / "config.json") == config
    assert config.replace(lr=0.05).changes_from(config) == {"lr": (0.1, 0.05)}


def test_imagenet_recipe_is_section_3_4() -> None:
    config = TrainConfig.for_dataset("imagenet", arch="resnet50")
    assert (config.batch_size, config.lr, config.momentum, config.weight_decay) == (256, 0.1, 0.9, 1e-4)
    assert config.iterations == 600_000 and config.lr_schedule == "plateau" and config.milestones == ()
    assert config.warmup is False and config.preset == "paper" and config.crops == 10
    assert TrainConfig.for_dataset("imagenet", preset="torchvision").crops == 1
    assert TrainConfig.for_dataset("imagenet", eval_crops=1).crops == 1
    # from_dict starts from the same recipe; explicit values win over it.
    assert TrainConfig.from_dict({"dataset": "imagenet", "batch_size": 64}).batch_size == 64
    assert TrainConfig.from_dict({"dataset": "imagenet"}) == TrainConfig.for_dataset("imagenet")


def test_lr_scales_linearly_with_the_batch_only_when_asked() -> None:
    assert TrainConfig.for_dataset("imagenet").scaled_lr == pytest.approx(0.1)
    assert TrainConfig.for_dataset("imagenet", batch_size=512).scaled_lr == pytest.approx(0.2)
    assert TrainConfig.for_dataset("imagenet", batch_size=64, lr=0.2).scaled_lr == pytest.approx(0.05)
    assert TrainConfig(batch_size=512).scaled_lr == 0.1  # CIFAR: the paper's rate at any batch unless asked


def test_epochs_resolve_to_iterations() -> None:
    config = TrainConfig.from_dict({"dataset": "imagenet", "epochs": 90, "milestone_epochs": "30,60",
                                    "lr_schedule": "step"})
    assert config.milestones == () and config.milestone_epochs == (30, 60)
    resolved = config.with_epochs_resolved(iterations_per_epoch=100)
    assert (resolved.iterations, resolved.milestones, resolved.milestone_epochs) == (9_000, (3_000, 6_000), ())
    assert TrainConfig().with_epochs_resolved(100) == TrainConfig()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"preset": "torchvision"}, "preset applies to the ImageNet pipeline only"),
        ({"eval_crops": 10}, "eval_crops applies to the ImageNet pipeline only"),
        ({"dataset": "imagenet", "preset": "timm"}, "unknown preset 'timm'"),
        ({"dataset": "imagenet", "eval_crops": 5}, "eval_crops must be 1"),
        ({"dataset": "imagenet", "workers": -1}, "workers must be >= 0"),
        ({"dataset": "imagenet", "image_size": 0}, "image_size must be a positive integer"),
        ({"dataset": "svhn"}, "unknown dataset 'svhn'"),
        ({"lr_schedule": "cosine"}, "unknown lr_schedule 'cosine'"),
        ({"milestone_epochs": [60, 30]}, "milestone_epochs must be increasing"),
        ({"milestone_epochs": [30], "milestones": [100]}, "milestones and milestone_epochs both given"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"lr_reference_batch": 0}, "lr_reference_batch must be a positive"),
    ],
)
def test_imagenet_and_schedule_mistakes_fail_with_one_line(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        TrainConfig.from_dict(values)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf"), "600", True])
def test_checkpoint_seconds_must_be_finite_and_not_negative(seconds: object) -> None:
    with pytest.raises(ConfigError, match="^checkpoint_seconds must be") as error:
        TrainConfig.from_dict({"checkpoint_seconds": seconds})
    assert "\n" not in str(error.value)


def test_checkpoint_seconds_is_a_resumable_float() -> None:
    assert TrainConfig().checkpoint_seconds == 0.0  # off: checkpoints every checkpoint_every iterations only
    config = TrainConfig.from_dict({"checkpoint_seconds": 600})  # JSON / YAML integers are accepted
    assert config.checkpoint_seconds == 600.0 and isinstance(config.checkpoint_seconds, float)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert "checkpoint_seconds" in RESUMABLE_CHANGES  # it changes when checkpoints are written, not the result


def test_the_config_module_depends_on_neither_the_step_nor_torchvision() -> None:
    """The configuration names and checks its options without importing what executes them: no import of
    resnet_core.engine.step (which imports the config for its types: no cycle) and no torchvision."""
    import ast
    import inspect

    from resnet_core.engine import config

    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(config)))
                if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(ast.parse(inspect.getsource(config)))
                 if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name.startswith(("torchvision", "resnet_core.engine.step",
                                                              "resnet_core.data"))}, imported


def test_direct_construction_and_dataclasses_replace_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="^lr must be > 0, got 0"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="^unknown config key lr_decya: did you mean lr_decay"):
        TrainConfig(lr_decya=0.5)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="^momentum must be in"):
        dataclasses.replace(TrainConfig(), momentum=1.5)
    with pytest.raises(ConfigError, match="^preset applies to the ImageNet pipeline only"):
        TrainConfig(preset="torchvision")
    config = TrainConfig(lr=1, milestones=[10, 20], shortcut="b")  # type: ignore[arg-type]
    assert (config.lr, config.milestones, config.shortcut) == (1.0, (10, 20), "B") and isinstance(config.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 0.5  # type: ignore[misc]


def test_configs_pickle_compare_and_hash_by_value() -> None:
    """Ray ships configs between processes; the study keys results by them."""
    config = TrainConfig.for_dataset("imagenet", arch="resnet50", milestone_epochs=(30, 60), lr_schedule="step")
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config and hash(copy) == hash(config) and copy is not config
    assert config != config.replace(seed=1) and len({config, copy, config.replace(seed=1)}) == 2
    assert json.loads(json.dumps(config.to_dict()))["milestone_epochs"] == [30, 60]


def test_field_specs_describe_every_field() -> None:
    specs = field_specs()
    assert list(specs) == TrainConfig.field_names()
    assert [name for names in SECTIONS.values() for name in names] == list(specs)
    defaults = TrainConfig().to_dict()
    for name, spec in specs.items():
        assert spec.name == name and spec.default == defaults[name], name
        assert spec.help and "\n" not in spec.help and spec.section in SECTIONS, name
        assert spec.kind in {"int", "float", "bool", "str", "choice", "int_list"}, name
        assert (spec.choices is not None) == (spec.kind in {"choice", "bool"}), name
    kinds = {name: (spec.kind, spec.optional, spec.choices) for name, spec in specs.items()}
    assert kinds["batch_size"] == ("int", False, None) and kinds["lr"] == ("float", False, None)
    assert kinds["milestones"] == ("int_list", False, None) and kinds["arch"] == ("str", False, None)
    assert kinds["depth"] == ("int", True, None) and kinds["cache_dir"] == ("str", True, None)
    assert kinds["augment"] == ("bool", False, (True, False)) and kinds["warmup"] == ("bool", True, (True, False))
    assert kinds["shortcut"] == ("choice", True, ("A", "B", "C")) and kinds["eval_crops"] == ("choice", True, (1, 10))
    assert kinds["dataset"] == ("choice", False, ("cifar10", "cifar100", "imagenet"))
    assert kinds["normalization"] == ("choice", False, ("pixel_mean", "channel"))
    assert kinds["lr_schedule"] == ("choice", False, ("step", "plateau"))
    assert kinds["preset"] == ("choice", False, ("paper", "torchvision"))
    assert kinds["compile"] == ("choice", False, ("none", "default", "reduce-overhead", "max-autotune"))
    assert specs["milestones"].default == [32_000, 48_000] and specs["preset"].section == "imagenet"
    # The paper's numbers are cited where the paper fixes them.
    for name in ("batch_size", "lr", "momentum", "weight_decay", "iterations", "milestones", "lr_decay"):
        assert "Sec. 4.2" in specs[name].help, name
    assert "Sec. 3.4" in specs["batch_size"].help and set(IMAGENET_RECIPE) <= set(specs)


def test_the_json_schema_lists_every_field_with_its_choices_and_description() -> None:
    schema = train_config_schema()
    properties = schema["properties"]
    assert list(properties) == TrainConfig.field_names() and schema["additionalProperties"] is False
    for name, spec in field_specs().items():
        assert properties[name]["description"] == spec.help and properties[name]["default"] == spec.default, name
        if spec.kind == "choice":
            arms = properties[name].get("anyOf", [properties[name]])
            assert [arm["enum"] for arm in arms if "enum" in arm] == [list(spec.choices or ())], name
    assert properties["batch_size"]["exclusiveMinimum"] == 0 and properties["momentum"]["exclusiveMaximum"] == 1
    assert properties["milestones"]["items"] == {"type": "integer"} and properties["augment"]["type"] == "boolean"
    json.dumps(schema)  # plain JSON
