"""Every setting in the schema reaches the code: changing it changes what a job is given
(its params, or its resources), and the code reads it. A key that does nothing fails here.

Dry runs against the one-target workdir (conftest.one_target_run): a changed setting must
plan at least one job; a resource must change a job's resources line. The code reads a key
where its section is consumed (READERS, and the statements of the rules that take the section
from the config), by name: a short key such as k or lr counts only there.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import io
import re
import subprocess
import sys
import tokenize
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import REPO, sample_config

from molorec.config import check_config
from molorec.data.instructions import DEFAULT_PROMPT
from molorec.schema import load_schema

SCHEMA = load_schema()
# Tested elsewhere, because a new value needs new files: the inputs of a domain and a
# general adapter built elsewhere (tests/test_domains.py, tests/test_config.py).
ELSEWHERE = {"general_adapter", "role", "format", "reviews", "meta", "path"}
# The reader options of other raw formats (csv, recbole, movielens): a new value needs a
# domain of that format and its files (tests/test_formats.py changes each on one).
ELSEWHERE |= {"interactions", "items", "columns", "separator", "encoding"}
# The grid variants (merges, controls) plan jobs of their own that the one-target run has
# not run: tests/test_grid.py changes them on a run that has.
ELSEWHERE |= {"merges", "controls"}
# Sharing the general adapter changes the replicates beyond the first, which the sample does
# not run: tests/test_grid.py and tests/test_cost.py plan it with 3 and 2.
ELSEWHERE |= {"replicates_share_general"}
# train.general and train.domain take the very keys of train (one $defs entry, one function:
# molorec.settings.train_settings); walking them once per kind proves the override path.
OVERRIDE_SAMPLE = {"lr", "max_steps"}
# Values that a plain rule (next_value) cannot make valid here.
SPECIAL = {
    "target_modules": ["q_proj", "v_proj"],
    "base": "smollm2-135m",
    "gpu_model": "h100",
    "slurm_partition": "gpu",
    "user": DEFAULT_PROMPT["user"] + " Be brief.",  # a template must keep its fields
}
PACKAGE = REPO / "src/molorec"
# The code that passes settings on to the stages (some keys only shape the jobs there:
# fusion.lr_grid, fusion.n_prompts); a statement here reads the keys of the sections it
# takes from the config (config["fusion"]).
ROUTES = [
    *(REPO / "rules").glob("*.smk"),
    *(REPO / "workflow/scripts").glob("*.py"),
    PACKAGE / "config.py",
    PACKAGE / "plan.py",
    PACKAGE / "settings.py",
]
# The modules that consume each section (globs under src/molorec). A key counts as read only
# where its section is consumed: a short key (k, lr, seed) appears somewhere in almost any
# code base, and there proves nothing.
READERS = {
    "seed": [],  # config["seed"], passed on by the routes
    "replicates": [],  # molorec.plan.replicates, a route: the rules plan the copies
    "domains": ["data/*.py", "io/*.py"],
    "data": ["data/*.py", "io/*.py"],
    "prompt": ["data/instructions.py"],
    "model": ["model.py"],
    "train": ["train.py"],
    "fusion": ["fusion.py"],
    "evaluate": ["evaluate.py", "predict.py", "baselines.py", "metrics.py", "report.py"],
    "report": ["report.py"],
    "resources": [],  # Snakemake and its SLURM executor read a job's resources (RESOURCE_READERS)
}
# Where Snakemake reads a job's standard resources, and its SLURM executor (a test extra) the
# SLURM ones: package -> files.
RESOURCE_READERS = {"snakemake": "resources.py", "snakemake_executor_plugin_slurm": "*.py"}


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
            if key == "fusion" and value.get("role") == "general":
                continue  # only target domains are fused (the schema refuses it elsewhere)
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


def statements(path: Path) -> list[tuple[set[str], set[str]]]:
    """Per top-level statement of a file (Python or Snakemake: a def, a rule, an assignment),
    the config sections it reads (``config["fusion"]``, ``config.get("fusion")``) and the
    names it could read a setting by: a string literal (a subscript, ``.get``, a tuple of
    keys), an attribute (``.key``), a keyword inside brackets (``key=``) and a name annotated
    at the start of a line (a dataclass field ``key: int``). Not comments, a ``lambda k:``, a
    loop variable, nor a name inside a longer word."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    tokens = [t for t in tokens if t.type not in (tokenize.COMMENT, tokenize.NL)]
    found, depth, level = [], 0, 0
    for i, token in enumerate(tokens):
        before = tokens[i - 1] if i else None
        after = tokens[i + 1].string if i + 1 < len(tokens) else ""
        starts_line = before is None or before.type in LINE_STARTS
        level += (token.type == tokenize.INDENT) - (token.type == tokenize.DEDENT)
        if starts_line and level == 0 and token.type not in LINE_STARTS:
            found.append((set(), set()))
        if not found:
            continue
        sections, names = found[-1]
        if token.type == tokenize.OP:
            depth += (token.string in "([{") - (token.string in ")]}")
        elif token.type == tokenize.STRING:
            try:
                value = ast.literal_eval(token.string)
            except (SyntaxError, ValueError):  # an f-string
                continue
            if isinstance(value, str):
                names.add(value)
                lead = "".join(t.string for t in tokens[max(i - 4, 0) : i])
                if lead.endswith(("config[", "config.get(")):
                    sections.add(value)
        elif token.type == tokenize.NAME and (
            (before is not None and before.string == ".")
            or (after == "=" and depth > 0)
            or (after == ":" and depth == 0 and starts_line)
        ):
            names.add(token.string)
    return found


LINE_STARTS = (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)


def package_files(name: str, glob: str) -> list[Path]:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return sorted(Path(next(iter(spec.submodule_search_locations))).glob(glob))


@functools.cache
def section_names(section: str) -> frozenset[str]:
    """The names the code of a section could read a key by: anywhere in its consumers, and
    in the statements of the routes that read the section (``config["fusion"]``)."""
    assert section in READERS, f"config section {section!r}: add its consumers to READERS"
    consumers = [path for glob in READERS[section] for path in PACKAGE.glob(glob)]
    if section == "resources":
        consumers += [
            p for name, glob in RESOURCE_READERS.items() for p in package_files(name, glob)
        ]
    names = {n for path in consumers for _, found in statements(path) for n in found}
    for path in ROUTES:
        for sections, found in statements(path):
            if section in sections:
                names |= found
    return frozenset(names)


@functools.cache
def route_names() -> frozenset[str]:
    return frozenset(n for path in ROUTES for _, found in statements(path) for n in found)


def reads(path: tuple[str, ...]) -> bool:
    """Whether the code of the setting's section reads its key. A key of a setting that is
    indexed by a variable (fusion.n_prompts.warm: by the scenario) is read where that
    setting is, and the routes name the key (SCENARIOS = ["warm", "cold"])."""
    if path[-1] in section_names(path[0]):
        return True
    nested = len(path) > 2 and path[-2] in section_names(path[0])
    return nested and path[-1] in route_names()


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
        if not changed:
            dead.append(".".join(path))
    assert not dead, f"settings that change no job: {dead}"


def schema_keys(schema: dict) -> list[tuple[str, ...]]:
    """The path of every setting the walk changes, on the sample config (its domains)."""
    config = check_config(sample_config(), base_dir=REPO)
    return [path for path, _ in leaves(schema, config)]


def unread(schema: dict) -> list[str]:
    return [".".join(path) for path in schema_keys(schema) if not reads(path)]


def test_every_setting_is_read_where_its_section_is_consumed():
    missing = unread(SCHEMA)
    assert not missing, f"settings that the code of their section never reads: {missing}"


def test_a_short_key_counts_as_read_only_in_its_own_section():
    # fusion.k is read (FusionSettings.k, the rules' list of fusion keys); a k in another
    # section, or a one-letter key the code never names, is not, though both letters
    # appear all over the code (lambda k:, for k in, k=v).
    assert reads(("fusion", "k")) and reads(("train", "lr")) and reads(("seed",))
    assert not reads(("data", "k")) and not reads(("fusion", "v"))
    assert not reads(("fusion", "lora_r"))  # a train key, read by train.py only


# The config section each module's settings come from: a parameter or field named as one
# of the section's keys takes the schema's default for it, if it has a default at all.
DEFAULTS_OF = {
    "molorec.settings.ExampleSettings": "data",
    "molorec.settings.TrainSettings": "train",
    "molorec.settings.FusionSettings": "fusion",
    "molorec.fusion": "fusion",
    "molorec.mixture": "fusion",
    "molorec.evaluate": "evaluate",
    "molorec.predict": "evaluate",
    "molorec.baselines": "evaluate",
    "molorec.train": "train",
    "molorec.data.examples": "data",
    "molorec.data.instructions": "data",
    "molorec.data.ingest": "data",
    "molorec.io.rawfile": "data",
    "molorec.io.amazon": "data",
    "molorec.io.mooccube": "data",
}


def code_defaults():
    """(where, key, default, schema default) of every dataclass field and function
    parameter the modules above give a default and their section has a key for. A default
    of None is no value of its own (the caller's or the settings' is taken)."""
    import dataclasses
    import importlib
    import inspect

    from molorec.schema import defaults

    for where, section in DEFAULTS_OF.items():
        wanted = defaults(section)
        module, _, cls = where.rpartition(".") if where.endswith("Settings") else (where, "", "")
        if cls:
            obj = getattr(importlib.import_module(module), cls)
            for f in dataclasses.fields(obj):
                if f.name in wanted and f.default not in (dataclasses.MISSING, None):
                    yield where, f.name, f.default, wanted[f.name]
            continue
        mod = importlib.import_module(module)
        for name, fn in vars(mod).items():
            if not inspect.isfunction(fn) or fn.__module__ != module:
                continue
            for p in inspect.signature(fn).parameters.values():
                if p.name in wanted and p.default not in (inspect.Parameter.empty, None):
                    yield f"{module}.{name}", p.name, p.default, wanted[p.name]


def test_no_code_default_differs_from_the_schema():
    found = list(code_defaults())
    # The checked defaults include the ones that drifted before (fusion and evaluation's
    # max_new_tokens): the walk reaches them.
    assert ("molorec.settings.FusionSettings", "max_new_tokens") in {(w, k) for w, k, *_ in found}
    assert ("molorec.evaluate.predict_llm", "max_new_tokens") in {(w, k) for w, k, *_ in found}
    drifted = [
        f"{w}.{k} = {code!r}, schema {schema!r}" for w, k, code, schema in found if code != schema
    ]
    assert not drifted, f"code defaults that differ from the schema's: {drifted}"
