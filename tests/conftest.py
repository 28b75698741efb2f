"""Shared test helpers: running the workflow in a scratch folder."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Deprecations our code triggers are errors (pyproject's filterwarnings catches those
# attributed to molorec; these catch those a library attributes to its own frames).
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
# Frames that only pass a call on: the library that warns is the callee, not the caller.
PASS_THROUGH = ("torch.nn.modules.module", "functools", "contextlib", "logging")


def deprecated_call_site(frame) -> str | None:
    """The module that called the deprecated API: the first frame outside the package that
    warns (and outside pure dispatch such as torch's Module.__call__)."""
    emitter = frame.f_globals.get("__name__", "").split(".")[0]
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] != emitter and not module.startswith(PASS_THROUGH):
            return module
        frame = frame.f_back
    return None


def from_molorec(frame) -> bool:
    site = deprecated_call_site(frame)
    return site is not None and site.split(".")[0] == "molorec"


class DeprecationLog(logging.Handler):
    """transformers and peft announce some deprecations through logging, not warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record):
        if "deprecat" not in record.getMessage().lower():
            return
        frame = sys._getframe(1)
        while frame is not None and not frame.f_code.co_filename.endswith(record.pathname):
            frame = frame.f_back
        if frame is not None and from_molorec(frame):
            self.seen.append(record.getMessage())


@pytest.fixture(autouse=True)
def no_deprecated_calls_from_molorec(monkeypatch):
    original = warnings.warn

    def warn(message, category=None, stacklevel=1, source=None, **kwargs):
        category = type(message) if isinstance(message, Warning) else category or UserWarning
        if issubclass(category, DEPRECATIONS) and from_molorec(sys._getframe(1)):
            raise category(f"{message} (a deprecated call in molorec code)")
        original(message, category, stacklevel + 1, source, **kwargs)

    monkeypatch.setattr(warnings, "warn", warn)
    log = DeprecationLog()
    loggers = [logging.getLogger(name) for name in ("transformers", "peft")]
    for logger in loggers:
        logger.addHandler(log)
    yield
    for logger in loggers:
        logger.removeHandler(log)
    assert not log.seen, f"molorec code called deprecated API: {log.seen}"


# Conda-forge names that differ from PyPI's.
CONDA_TO_PYPI = {"matplotlib-base": "matplotlib"}
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$")


def split(requirement: str) -> tuple[str, str]:
    name, spec = REQUIREMENT.match(requirement).groups()
    return name.lower(), spec.replace(" ", "")


def env_packages(env: str) -> dict[str, str]:
    """envs/<env>.yaml's packages, PyPI name -> version bounds (the interpreter and pip
    aside; an entry installing a path, such as the project, is kept as written)."""
    spec = yaml.safe_load((REPO / f"envs/{env}.yaml").read_text())
    packages = {}
    for dep in spec["dependencies"]:
        for entry in dep["pip"] if isinstance(dep, dict) else [dep]:
            if entry.startswith("-") or "/" in entry or entry.startswith("."):
                packages[entry] = ""
                continue
            name, bounds = split(entry)
            if name not in ("python", "pip"):
                packages[CONDA_TO_PYPI.get(name, name)] = bounds
    return packages


def rule_blocks() -> dict[str, str]:
    """Every rule statement's body, dedented to the rule's own level: top-level rules,
    rules under an ``if`` and the anonymous ones a loop defines (named by their ``name:``,
    as written: an f-string stays one entry)."""
    blocks = {}
    for path in sorted((REPO / "rules").glob("*.smk")) + [REPO / "Snakefile"]:
        text = path.read_text()
        for m in re.finditer(r"^([ \t]*)rule(?: (\w+))?:\n", text, re.M):
            indent, lines = m.group(1), []
            for line in text[m.end() :].splitlines(keepends=True):
                if line.strip() and not (line.startswith(indent) and line[len(indent)].isspace()):
                    break
                lines.append(line[len(indent) :] if line.strip() else "\n")
            body = "".join(lines)
            name = m.group(2) or re.search(r"^    name:\n\s+(.+)$", body, re.M).group(1)
            blocks[f"{path.name}:{name}"] = body
    return blocks


def data_env_scripts() -> list[str]:
    """The scripts of the rules whose conda env is envs/data.yaml."""
    scripts = set()
    for body in rule_blocks().values():
        if re.search(r'^    conda:\n\s+"\.\./envs/data\.yaml"', body, re.M):
            scripts |= set(
                re.findall(r'^    script:\n\s+"[./]*workflow/scripts/(\w+)\.py"', body, re.M)
            )
    return sorted(scripts)


def model_env_modules() -> list[str]:
    """The top-level modules of the packages that envs/molorec.yaml installs and
    envs/data.yaml does not (snakemake aside: a script job imports it from Snakemake's own
    install, whatever the env)."""

    def canonical(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    only = {canonical(d) for d in set(env_packages("molorec")) - set(env_packages("data"))}
    only.discard("snakemake")
    found = importlib.metadata.packages_distributions()
    return sorted(m for m, dists in found.items() if only & {canonical(d) for d in dists})


def light_env(workdir: Path, base: dict | None = None) -> dict:
    """The environment of a workflow run whose data-env jobs fail on any import that
    envs/data.yaml could not satisfy (tests/light_env/sitecustomize.py); the jobs that ran
    guarded are listed in workdir/.light_env_jobs."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "tests/light_env"), env.get("PYTHONPATH")) if p
    )
    env["MOLOREC_LIGHT_SCRIPTS"] = ",".join(data_env_scripts())
    env["MOLOREC_LIGHT_DENY"] = ",".join(model_env_modules())
    env["MOLOREC_LIGHT_RECORD"] = str(workdir / ".light_env_jobs")
    return env


def run_workflow(workdir: Path, config: dict, *extra: str) -> subprocess.CompletedProcess:
    """Snakemake on this repo's Snakefile with ``config`` as workdir/config.yaml; the jobs of
    the light data env import only what envs/data.yaml installs (light_env)."""
    workdir.mkdir(parents=True, exist_ok=True)
    # In the dict's own key order, as a user's hand-written file (tests sort or shuffle it).
    text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    (workdir / "config.yaml").write_text(text)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--cores", "2", "--directory", str(workdir), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=light_env(workdir))


def sample_config() -> dict:
    """The repo's config.yaml with its input paths made absolute, on the embedded tiny
    model (plumbing, in minutes; tests/test_smollm2.py covers the real default model), with
    job memory sized for it so that jobs run two at a time under the default profile."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for spec in config["domains"].values():
        for key in ("reviews", "meta", "path"):
            if key in spec:
                spec[key] = str(REPO / spec[key])
    config["model"]["base"] = "tiny-qwen2"
    for stage in config["resources"].values():
        stage |= {"threads": 1} | ({"mem_mb": 2000} if "mem_mb" in stage else {})
    return config


def one_target_config() -> dict:
    """The sample reduced to one general and one target domain, one lr per scenario and one
    baseline: every rule runs, in a few minutes, for the SLURM and domain-addition tests."""
    config = sample_config()
    config["domains"] = {d: config["domains"][d] for d in ("cell_phones", "beauty")}
    config["fusion"] |= {
        "n_prompts": {"warm": 4, "cold": 2},
        "lr_grid": {"warm": [2.0], "cold": [0.05]},
    }
    config["evaluate"] |= {"max_examples": 8, "baselines": ["pop"]}
    # 6 steps per adapter, set once for both kinds (the sample's per-kind values go).
    config["train"]["max_steps"] = 6
    for kind in ("general", "domain"):
        config["train"][kind].pop("max_steps", None)
    return config


def tree_bytes(root: Path, patterns=("eval/**/metrics.json", "eval/**/selection.json")) -> dict:
    """Relative path -> content of the files under root matching the patterns."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for pattern in patterns
        for p in sorted(root.glob(pattern))
    }


def result_files(workdir: Path) -> set[str]:
    """Every file a run produced under results/, benchmarks aside (timings differ)."""
    root = workdir / "results"
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.parts[len(root.parts)] != "benchmarks"
    }


@pytest.fixture(scope="session")
def one_target_run(tmp_path_factory):
    """The one-target pipeline run locally; its metrics and file list are snapshot at once
    because the domain-addition test grows this workdir afterwards."""
    config = one_target_config()
    workdir = tmp_path_factory.mktemp("one_target")
    proc = run_workflow(workdir, config)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return workdir, config, tree_bytes(workdir / "results"), result_files(workdir)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> str:
    """The embedded tiny Qwen2 model with the real Qwen tokenizer, built once per session."""
    from molorec.model import build_tiny_qwen2

    return str(build_tiny_qwen2(tmp_path_factory.mktemp("models") / "tiny-qwen2"))


@pytest.fixture(scope="session")
def tokenizer(tiny):
    from molorec.model import load_base

    return load_base(tiny)[1]
