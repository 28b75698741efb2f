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


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> str:
    """The embedded tiny Qwen2 model with the real Qwen tokenizer, built once per session."""
    from molorec.model import build_tiny_qwen2

    return str(build_tiny_qwen2(tmp_path_factory.mktemp("models") / "tiny-qwen2"))


@pytest.fixture(scope="session")
def tokenizer(tiny):
    from molorec.model import load_base

    return load_base(tiny)[1]
