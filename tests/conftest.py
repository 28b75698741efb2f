"""Shared test helpers: running the workflow in a scratch folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_workflow(workdir: Path, config: dict, *extra: str) -> subprocess.CompletedProcess:
    """Snakemake on this repo's Snakefile with ``config`` as workdir/config.yaml."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--cores", "2", "--directory", str(workdir), *extra]
    return subprocess.run(cmd, capture_output=True, text=True)
