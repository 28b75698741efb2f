"""The workflow's conventions: logs and conda envs on every rule, one package list, and the
linters (snakemake --lint, snakefmt, ruff) clean. CI runs these through the test command."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO, env_packages, rule_blocks, split

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's own copy of tomli, so nothing can skip
    from pip._vendor import tomli as tomllib


def test_conda_env_and_pyproject_list_the_same_packages():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = dict(split(r) for r in project["dependencies"])
    assert env_packages("molorec") == wanted


def constraints() -> dict[str, str]:
    """constraints.txt: the tested set, name -> version."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_lower_bounds_are_the_tested_versions():
    """Every lower bound is a version the suite passed on: the one constraints.txt pins."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    pins = constraints()
    for requirement in requirements:
        name, spec = split(requirement)
        lower = re.search(r">=([^,]+)", spec)
        assert lower, f"{requirement}: no lower bound"
        assert lower.group(1) == pins[name.replace("_", "-")], requirement


def derived_rules() -> dict[str, tuple[str, str]]:
    """Every ``use rule <base> as <name> with:`` statement: name -> (base, its body)."""
    derived = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        text = path.read_text()
        for m in re.finditer(r"^use rule (\w+) as (\w+) with:\n", text, re.M):
            lines = []
            for line in text[m.end() :].splitlines(keepends=True):
                if line.strip() and not line[0].isspace():
                    break
                lines.append(line)
            derived[m.group(2)] = (m.group(1), "".join(lines))
    return derived


def test_every_rule_with_an_action_has_a_log_and_a_conda_env():
    blocks = rule_blocks()
    derived = derived_rules()
    # Every rule the workflow defines on the default config, and no other, is checked: a
    # rule derived with `use rule ... with:` keeps its base's conda env and action, and
    # gives its own log (its outputs, so its wildcards, are its own).
    cmd = [sys.executable, "-m", "snakemake", "--list-rules"]
    listed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    names = [name.split(":", 1)[1] for name in blocks] + list(derived)
    assert sorted(names) == sorted(listed.split())
    defined = {name.split(":", 1)[1] for name in blocks}
    for name, (base, body) in derived.items():
        assert base in defined or base in derived, name
        assert re.search(r"^    log:", body, re.M), f"rule {name} has no log:"
        assert not re.search(r"^    conda:", body, re.M), f"rule {name}: the env is its base's"
    for name, body in blocks.items():
        if not re.search(r"^    (shell|script|run|notebook|wrapper):", body, re.M):
            continue  # a target rule such as `all`
        assert re.search(r"^    log:", body, re.M), f"rule {name} has no log:"
        env = re.search(r'^    conda:\n\s+"([^"]+)"', body, re.M)
        assert env, f"rule {name} has no conda:"
        assert (REPO / "rules" / env.group(1)).resolve().parent == REPO / "envs", name
        assert (REPO / "rules" / env.group(1)).is_file(), name


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "snakemake", "--lint"],
        [sys.executable, "-m", "snakefmt", "--check", "."],
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
    ],
    ids=["snakemake-lint", "snakefmt", "ruff-check", "ruff-format"],
)
def test_linters_report_nothing(command):
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    if "--lint" in command:
        assert "Congratulations, your workflow is in a good condition!" in out, out[-5000:]
