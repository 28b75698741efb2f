"""config.yaml: validation with messages that name the domain, key and path, and defaults.

Snakemake's ``validate`` runs the same schema; this module adds what a schema cannot say
(input files exist, domains that can be built) and turns errors into one readable line.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import polars as pl
import yaml

from molorec.data.examples import ExampleSettings
from molorec.data.instructions import DEFAULT_PROMPT, TEMPLATE_FIELDS, template_expr
from molorec.model import resolve_base

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


DOMAIN_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ConfigError(ValueError):
    pass


def load_schema(path: str | Path | None = None) -> dict:
    with open(path or SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _apply_defaults(node: dict, schema: dict) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if isinstance(node.get(key), dict):
            _apply_defaults(node[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in node.items():
            if key not in schema.get("properties", {}) and isinstance(value, dict):
                _apply_defaults(value, extra)


def check_config(
    config: dict, base_dir: str | Path = ".", schema: dict | None = None, inputs: bool = True
) -> dict:
    """Validate ``config`` and fill defaults in place; raise ConfigError naming what is wrong.
    ``inputs``: also check that the raw dumps exist (not for a cost plan made elsewhere)."""
    schema = schema or load_schema()
    for name in config.get("domains") or {}:
        if not isinstance(name, str) or not DOMAIN_NAME.fullmatch(name) or name == "general":
            raise ConfigError(
                f"config: domain name {name!r} is not allowed: names must match "
                "[a-z][a-z0-9_]* (they become folder names and wildcards) and 'general' "
                "is reserved for the pooled general set"
            )
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise ConfigError(f"config: {_where(err.absolute_path)}: {err.message}")
    _apply_defaults(config, schema)

    base = Path(base_dir)
    for name, spec in config["domains"].items():
        keys = ["path"] if spec["format"] == "mooccube" else ["reviews", "meta"]
        for key in keys:
            path = base / spec[key]
            if inputs and not path.exists():
                raise ConfigError(
                    f"config: domains.{name}.{key}: input not found: {spec[key]} "
                    f"(resolved to {path.resolve()})"
                )
        if inputs and spec["format"] == "mooccube":
            for sub in ("entities/user.json", "entities/course.json"):
                if not (base / spec["path"] / sub).is_file():
                    raise ConfigError(f"config: domains.{name}.path: {spec['path']} has no {sub}")
        try:
            template_expr(
                prompt_for(config, name)["user"], {f: pl.lit("") for f in TEMPLATE_FIELDS}
            )
        except ValueError as exc:
            raise ConfigError(f"config: prompt for domain {name}: {exc}") from None
    data = config["data"]
    if data["answer_size"] > data["n_candidates"]:
        raise ConfigError(
            f"config: data.answer_size ({data['answer_size']}) exceeds data.n_candidates "
            f"({data['n_candidates']})"
        )
    if config.get("general_adapter"):
        general = domains_with_role(config, "general")
        if general:
            raise ConfigError(
                f"config: general_adapter is set, so the general domains {general} would not "
                "be used: remove them, or remove general_adapter to train the general adapter"
            )
        check_general_adapter(base / config["general_adapter"], config["model"]["base"])
    return config


def _branches(node: dict, root: dict) -> list[dict]:
    """A schema node with its $ref, allOf, oneOf and anyOf branches, resolved."""
    found, todo = [], [node]
    while todo:
        n = todo.pop()
        if not isinstance(n, dict):
            continue
        found.append(n)
        if "$ref" in n:
            target = root
            for part in n["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            todo.append(target)
        for key in ("allOf", "oneOf", "anyOf"):
            todo.extend(n.get(key, []))
    return found


def canonical(value, schema: dict, root: dict | None = None):
    """``value`` in one spelling per meaning, so Snakemake's params (compared as text) change
    only when a setting does: dict keys sorted, lists the schema marks ``x-unordered``
    sorted, and integers where the schema says number made floats (2 and 2.0 are one lr)."""
    root = root or schema
    branches = _branches(schema, root)
    if isinstance(value, dict):
        out = {}
        for key in sorted(value, key=str):
            subs = [b["properties"][key] for b in branches if key in b.get("properties", {})]
            if not subs:
                subs = [
                    b["additionalProperties"]
                    for b in branches
                    if isinstance(b.get("additionalProperties"), dict)
                ]
            out[key] = canonical(value[key], {"allOf": subs}, root)
        return out
    if isinstance(value, list):
        items = {"allOf": [b["items"] for b in branches if isinstance(b.get("items"), dict)]}
        out = [canonical(v, items, root) for v in value]
        if any(b.get("x-unordered") for b in branches):
            out = sorted(out)
        return out
    types = {b.get("type") for b in branches}
    if isinstance(value, int) and not isinstance(value, bool) and "number" in types:
        return float(value)
    return value


def check_general_adapter(path: Path, base_model: str) -> None:
    """A general adapter built elsewhere must be a PEFT LoRA folder trained on the same base
    model (by name: a hub id and a local copy of it agree). Layer shapes are checked again
    when the adapter is loaded."""
    where = f"config: general_adapter: {path}"
    config_file = path / "adapter_config.json"
    if not path.is_dir():
        raise ConfigError(f"{where}: not a folder")
    if not config_file.is_file():
        raise ConfigError(f"{where}: no adapter_config.json, so not a PEFT adapter folder")
    try:
        adapter = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}/adapter_config.json: line {exc.lineno}: {exc.msg}") from None
    if adapter.get("peft_type") != "LORA":
        raise ConfigError(f"{where}: peft_type is {adapter.get('peft_type')!r}, not LORA")
    if not (path / "adapter_model.safetensors").is_file():
        raise ConfigError(
            f"{where}: no adapter_model.safetensors (save it with safe_serialization=True)"
        )
    trained_on = adapter.get("base_model_name_or_path") or ""
    if model_name(trained_on) != model_name(resolve_base(base_model)):
        raise ConfigError(
            f"{where}: trained on base model {trained_on!r}, but model.base is {base_model!r}"
        )


def model_name(id_or_path: str) -> str:
    """Qwen/Qwen2-7B-Instruct, /models/qwen2-7b-instruct/ -> qwen2-7b-instruct."""
    return Path(id_or_path.rstrip("/")).name.lower()


def domains_with_role(config: dict, role: str) -> list[str]:
    return sorted(d for d, spec in config["domains"].items() if spec["role"] == role)


def prompt_for(config: dict, domain: str) -> dict:
    """The template of a domain: defaults, then the global prompt, then the domain's own."""
    prompt = dict(DEFAULT_PROMPT)
    prompt.update({k: v for k, v in config.get("prompt", {}).items() if v is not None})
    prompt.update(config["domains"][domain].get("prompt", {}))
    return prompt


def example_settings(config: dict, domain: str) -> ExampleSettings:
    data = config["data"]
    return ExampleSettings(
        seed=config["seed"],
        domain=domain,
        role=config["domains"][domain]["role"],
        n_candidates=data["n_candidates"],
        answer=data["answer"],
        answer_size=data["answer_size"],
        max_history=data["max_history"],
        domain_train_samples=data["domain_train_samples"],
        cold_item_fraction=data["cold_item_fraction"],
        selection_fraction=data["selection_fraction"],
        held_out_negatives=data["held_out_negatives"],
    )


def train_settings(config: dict, kind: str) -> dict:
    """TrainSettings fields of one kind of adapter (general | domain): the common
    ``train:`` settings, then ``train.<kind>``; the seed defaults to the top-level seed and
    an ``auto`` precision to model.precision."""
    common = {k: v for k, v in config["train"].items() if k not in ("general", "domain")}
    settings = {"seed": config["seed"], **common, **config["train"].get(kind, {})}
    if settings.get("precision", "auto") == "auto":
        settings["precision"] = config["model"].get("precision", "auto")
    return dict(sorted(settings.items()))
