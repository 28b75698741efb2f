"""Every setting in the schema reaches the code: changing it changes what a job is given
(its params, or its resources), and the code reads it. A key that does nothing fails here.

Dry runs against the one-target workdir (conftest.one_target_run): a changed setting must
plan at least one job; a resource must change a job's resources line.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from molorec.config import check_config, load_schema
from molorec.data.instructions import DEFAULT_PROMPT

SCHEMA = load_schema()
# Tested elsewhere, because a new value needs new files: the inputs of a domain and a
# general adapter built elsewhere (tests/test_domains.py, tests/test_config.py).
ELSEWHERE = {"general_adapter", "role", "format", "reviews", "meta", "path"}
# train.general and train.domain take the very keys of train (one $defs entry, one function:
# molorec.config.train_settings); walking them once per kind proves the override path.
OVERRIDE_SAMPLE = {"lr", "max_steps"}
# Values that a plain rule (next_value) cannot make valid here.
SPECIAL = {
    "target_modules": ["q_proj", "v_proj"],
    "base": "smollm2-135m",
    "gpu_model": "h100",
    "slurm_partition": "gpu",
    "user": DEFAULT_PROMPT["user"] + " Be brief.",  # a template must keep its fields
}
CODE = [
    *(REPO / "src/molorec").rglob("*.py"),
    *(REPO / "rules").glob("*.smk"),
    *(REPO / "workflow/scripts").glob("*.py"),
    REPO / "profiles/slurm/config.yaml",
]


def resolve(node: dict) -> dict:
    """A schema node with its $ref / allOf branches merged (properties and the rest)."""
    merged: dict = {}
    for part in [node, *node.get("allOf", [])]:
        if "$ref" in part:
            target = SCHEMA
            for key in part["$ref"].removeprefix("#/").split("/"):
                target = target[key]
            part = {**resolve(target), **{k: v for k, v in part.items() if k != "$ref"}}
        props = {**merged.get("properties", {}), **part.get("properties", {})}
        merged = {**merged, **{k: v for k, v in part.items() if k != "allOf"}}
        if props:
            merged["properties"] = props
    return merged


def leaves(node: dict, value, path=()):
    """(path, schema) of every setting below ``node``: a key without properties of its own."""
    node = resolve(node)
    props = node.get("properties", {})
    if props and isinstance(value, dict):
        for key, sub in props.items():
            override = len(path) == 2 and path[0] == "train"
            if key in ELSEWHERE or (override and key not in OVERRIDE_SAMPLE):
                continue
            yield from leaves(sub, value.get(key, {}), (*path, key))
    elif isinstance(node.get("additionalProperties"), dict) and isinstance(value, dict):
        for key in value:  # the domains
            yield from leaves(node["additionalProperties"], value[key], (*path, key))
    else:
        yield path, node


def get(config: dict, path):
    for key in path:
        config = config.get(key, {}) if isinstance(config, dict) else {}
    return config


def next_value(path, node, value):
    """Another valid value for a setting."""
    key = path[-1]
    if key in SPECIAL:
        return SPECIAL[key]
    if "enum" in node:
        return next(v for v in node["enum"] if v != value)
    kind = node.get("type")
    if kind == "boolean":
        return not value
    if kind == "integer":
        value = value if isinstance(value, int) else node.get("minimum", 1)
        return value - 1 if value + 1 > node.get("maximum", float("inf")) else value + 1
    if kind == "number":
        return round(value / 2, 6) if value else 0.05
    if kind == "string":
        return (value or "") + " Be brief."
    if kind == "array":
        options = node.get("items", {}).get("enum") or [0.25]
        return [*value, next(o for o in options if o not in value)]
    if "properties" in node:  # an object given as a whole (n_prompts)
        return {k: v + 1 for k, v in value.items()}
    raise AssertionError(f"{'.'.join(path)}: no rule for a new value of {node}")


def set_value(config: dict, path, value) -> dict:
    changed = copy.deepcopy(config)
    node = changed
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return changed


def dry_run(workdir: Path, config: dict, name: str, *extra: str) -> str:
    file = workdir.parent / f"{workdir.name}-settings-{name}.yaml"
    file.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--nolock"]
    cmd += ["--directory", str(workdir), "--configfile", str(file), "--dry-run", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
    return proc.stdout


def resource_lines(output: str) -> list[str]:
    return sorted(re.findall(r"^\s+((?:resources|threads): .*)$", output, re.M))


def reads(key: str) -> bool:
    """The key appears in the code as something read: a subscript, attribute or keyword."""
    pattern = re.compile(rf"""["']{key}["']|\.{key}\b|\b{key}=|\b{key}:""")
    return any(pattern.search(path.read_text()) for path in CODE)


@pytest.fixture(scope="module")
def settings_walk(one_target_run):
    workdir = one_target_run[0]
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    full = check_config(copy.deepcopy(config), base_dir=workdir)
    keys = list(leaves(SCHEMA, full))
    jobs = []
    for path, node in keys:
        changed = set_value(full, path, next_value(path, node, get(full, path)))
        forceall = path[0] == "resources"
        jobs.append((path, changed, forceall))

    def one(job):
        path, changed, forceall = job
        extra = ("--forceall",) if forceall else ()
        return path, dry_run(workdir, changed, ".".join(path), *extra)

    with ThreadPoolExecutor(2) as pool:
        outputs = dict(pool.map(one, jobs))
    baseline = dry_run(workdir, full, "defaults")
    baseline_resources = resource_lines(dry_run(workdir, full, "defaults-all", "--forceall"))
    return keys, outputs, baseline, baseline_resources


def test_the_walk_covers_the_schema(settings_walk):
    keys = {".".join(p) for p, _ in settings_walk[0]}
    assert len(keys) > 60
    for expected in ("evaluate.bootstrap", "fusion.tokens_per_step", "data.selection_fraction"):
        assert expected in keys
    assert "Nothing to be done" in settings_walk[2]  # the defaults written out change nothing


def test_every_setting_changes_a_job(settings_walk):
    keys, outputs, _, baseline_resources = settings_walk
    dead = []
    for path, _ in keys:
        out = outputs[path]
        if path[0] == "resources":
            changed = resource_lines(out) != baseline_resources
        else:
            changed = "Nothing to be done" not in out and "Job stats:" in out
        if not changed or not reads(path[-1]):
            dead.append(".".join(path))
    assert not dead, f"settings that change no job or that no code reads: {dead}"
