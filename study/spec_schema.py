"""The JSON Schema of a study spec, for editors: completion, types, defaults and the docs of every key.

Generated from the same models that validate a spec (:mod:`study.spec`'s dataclasses, read by pydantic) and, for
the keys that name training fields, from :class:`resnet_core.TrainConfig`: ``train:`` takes any field by name,
``search:`` any field a study may vary as a range or a list of choices, ``groups:`` any such field as a list of
values to cross. The schema types and documents; :func:`study.spec.load_spec` still decides (ranges, choices,
combinations), with its one-line errors.

``python -m study.spec_schema`` prints it; ``study/specs/spec.schema.json`` is the committed copy that the shipped
specs point at (``# yaml-language-server: $schema=spec.schema.json``), kept equal by a test.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from resnet_core.engine.config import train_config_schema
from study.spec import NOT_VARIED, STUDY_OWNED, StudySpec, default_spec_path

SCHEMA_FILE = default_spec_path().with_name("spec.schema.json")
REQUIRED = ["name", "groups"]
"""Keys a spec must give; every other section takes its defaults when left out."""


def spec_schema() -> dict[str, Any]:
    """The study spec's JSON Schema (draft 2020-12)."""
    schema = TypeAdapter(StudySpec).json_schema()
    schema["required"] = REQUIRED
    schema["description"] = ("A study of He et al. 2015 (Deep Residual Learning): what it trains (groups, train), "
                             "what it searches per group (search), and where it records (mlflow, storage).")
    training = _training_fields()
    varied = {name: field for name, field in training.items() if name not in NOT_VARIED}
    definitions = schema["$defs"]
    _extend(definitions["TrainSpec"], "overrides", training)
    _extend(definitions["SearchSpec"], "space", {
        name: {"anyOf": [{"$ref": "#/$defs/SearchRange"}, {"type": "null"}], "description": field.get("description",
               name) + " (searched: {low, high[, log][, step]} or {choices: [...]}; null: not searched)"}
        for name, field in varied.items()})
    _extend(definitions["GroupsSpec"], "cross", {
        name: {"type": "array", "minItems": 1, "items": _without_default(field),
               "description": field.get("description", name) + " (crossed: each value is its own group)"}
        for name, field in varied.items()})
    for definition in definitions.values():
        definition["additionalProperties"] = False
    schema["additionalProperties"] = False
    return schema


def _training_fields() -> dict[str, dict[str, Any]]:
    """TrainConfig's fields as JSON Schema properties, without those the spec sets under other keys."""
    schema = train_config_schema()
    return {name: field for name, field in schema["properties"].items() if name not in STUDY_OWNED}


def _extend(definition: dict[str, Any], extras: str, fields: dict[str, dict[str, Any]]) -> None:
    """Replace the section's extras field by the training fields it takes by name (its own keys win)."""
    properties = definition["properties"]
    properties.pop(extras, None)
    for name, field in fields.items():
        properties.setdefault(name, field)


def _without_default(field: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in field.items() if key not in ("default", "description", "title")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.spec_schema", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help=f"write it to this file (e.g. {SCHEMA_FILE.name}) instead of stdout")
    args = parser.parse_args(argv)
    text = json.dumps(spec_schema(), indent=2) + "\n"
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
