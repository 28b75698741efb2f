"""Shared test helpers: running the workflow in a scratch folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def run_workflow(workdir: Path, config: dict, *extra: str) -> subprocess.CompletedProcess:
    """Snakemake on this repo's Snakefile with ``config`` as workdir/config.yaml."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--cores", "2", "--directory", str(workdir), *extra]
    return subprocess.run(cmd, capture_output=True, text=True)


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
        stage |= {"threads": 1, "mem_mb": 2000}
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
    config["train"]["max_steps"] = 6
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
