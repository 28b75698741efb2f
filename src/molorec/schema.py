"""The config schema, shipped with the package (schemas/config.schema.yaml), and the
defaults it declares: the one place a setting's default is written. The stages' settings
classes and functions take their defaults from here (tests/test_settings.py checks that
none keeps its own)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path | None = None) -> dict:
    with open(path or SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def apply_defaults(node: dict, schema: dict) -> None:
    """Fill the schema's defaults into ``node`` in place, at every level."""
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if isinstance(node.get(key), dict):
            apply_defaults(node[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in node.items():
            if key not in schema.get("properties", {}) and isinstance(value, dict):
                apply_defaults(value, extra)


@cache
def _defaults() -> dict:
    config: dict = {"domains": {}}
    apply_defaults(config, load_schema())
    return config


def defaults(section: str) -> dict:
    """The default settings of one config section (data, train, fusion, evaluate, ...)."""
    return copy.deepcopy(_defaults()[section])
