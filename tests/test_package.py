"""The package on its own: installed from a wheel (not editable, outside the repository),
it finds its data files, the config schema among them, and plans a config's cost."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def install(target) -> None:
    """pip install of the built wheel into ``target``; with this environment's setuptools
    where it can build, in an isolated build environment otherwise."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    if subprocess.run([*cmd, "--no-build-isolation", str(REPO)], capture_output=True).returncode:
        subprocess.run([*cmd, str(REPO)], capture_output=True, check=True)


def test_the_installed_wheel_plans_the_paper_config(tmp_path):
    target = tmp_path / "site"
    install(target)
    assert (target / "molorec/schemas/config.schema.yaml").is_file()
    assert not (target / "molorec/__editable__").exists()
    env = os.environ | {"PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import molorec; print(molorec.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(target)), where  # the installed copy, not the repository's
    paper = REPO / "config/paper.yaml"
    cmd = [sys.executable, "-m", "molorec.cost", "--configfile", str(paper)]
    cmd += ["--results", str(tmp_path / "no-results")]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "a100_80gb_gpu_hours" in out.stdout and "total" in out.stdout
