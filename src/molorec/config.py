"""config.yaml: validation with messages that name the domain, key and path, and defaults.

Snakemake's ``validate`` runs the same schema; this module adds what a schema cannot say
(input files exist, domains that can be built) and turns errors into one readable line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import polars as pl

from molorec.data.instructions import TEMPLATE_FIELDS, template_expr
from molorec.io.formats import FORMAT_OPTIONS, FORMATS
from molorec.model import resolve_base
from molorec.plan import domains_with_role
from molorec.schema import apply_defaults, load_schema
from molorec.settings import prompt_for

DOMAIN_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ConfigError(ValueError):
    pass


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


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
    apply_defaults(config, schema)

    base = Path(base_dir)
    for name, spec in config["domains"].items():
        raw = FORMATS[spec["format"]]
        for key in raw.keys:
            path = base / spec[key]
            if inputs and not path.exists():
                raise ConfigError(
                    f"config: domains.{name}.{key}: input not found: {spec[key]} "
                    f"(resolved to {path.resolve()})"
                )
        for key in raw.keys if inputs and raw.within else ():
            for file in raw.files(spec):
                if not (base / file).is_file():
                    sub = file[len(spec[key]) + 1 :]
                    raise ConfigError(f"config: domains.{name}.{key}: {spec[key]} has no {sub}")
        for key in sorted(set(FORMAT_OPTIONS) - set(raw.options)):
            if key in spec:
                raise ConfigError(
                    f"config: domains.{name}.{key}: format {spec['format']} takes no {key} "
                    f"(the formats that do: {', '.join(FORMAT_OPTIONS[key])})"
                )
        if "min_rating" in spec and not raw.ratings:
            raise ConfigError(
                f"config: domains.{name}.min_rating: format {spec['format']} has no ratings"
            )
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
