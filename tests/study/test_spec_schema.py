"""The spec's JSON Schema: generated from the spec's models and TrainConfig, committed next to the shipped specs
(which it accepts), and strict about keys (a few seconds)."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from resnet_core import TrainConfig
from study.spec import STUDY_OWNED, load_spec
from study.spec_schema import SCHEMA_FILE, spec_schema


@pytest.fixture(scope="module")
def schema() -> dict:
    return spec_schema()


def _errors(schema: dict, spec: dict) -> list[str]:
    return [error.message for error in jsonschema.Draft202012Validator(schema).iter_errors(spec)]


def test_the_committed_schema_is_the_generated_one(schema: dict) -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == schema, "regenerate: python -m study.spec_schema --out " + str(
        SCHEMA_FILE.name)


@pytest.mark.parametrize("name", ["cifar10_depth.yaml", "smoke.yaml", "momentum.yaml", "cifar10_first_look.yaml"])
def test_the_shipped_specs_follow_it(schema: dict, name: str) -> None:
    spec = yaml.safe_load((SCHEMA_FILE.parent / name).read_text())
    assert _errors(schema, spec) == []
    assert _errors(schema, load_spec(SCHEMA_FILE.parent / name).to_dict()) == []


def test_training_fields_are_typed_and_documented_where_the_spec_takes_them(schema: dict) -> None:
    train = schema["$defs"]["TrainSpec"]["properties"]
    assert set(TrainConfig.field_names()) - set(STUDY_OWNED) <= set(train)
    assert train["final_seeds"]["description"].startswith("Retrainings")
    spec = {"name": "s", "groups": {"archs": ["resnet20"], "batch_size": [64, 128]},
            "search": {"momentum": {"low": 0.8, "high": 0.99}, "lr": None}, "train": {"lr_decay": 0.2}}
    assert _errors(schema, spec) == []
    assert _errors(schema, {**spec, "train": {"lr_decya": 0.2}})  # a misspelt key
    assert _errors(schema, {**spec, "train": {"lr_decay": "fast"}})  # a wrong type
    assert _errors(schema, {**spec, "search": {"iterations": {"low": 1, "high": 2}}})  # the budget is not searched
    assert _errors(schema, {"groups": {"archs": ["resnet20"]}}) == ["'name' is a required property"]
