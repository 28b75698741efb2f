"""The conda route without conda (no channel is reachable here): the envs hold dependencies
only, the rules import the workflow's own src/ (the Snakefile puts it on PYTHONPATH), the
data rules need nothing of the model env (envs/data.yaml), and the workflow runs from a
clone and as a module of another workflow in a Python that has the dependencies but not
molorec installed."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml
from conftest import REPO, data_env_scripts, env_packages, light_env, one_target_config

# The rules of the data env that the data targets below run.
DATA_STAGE = {"ingest_domain", "build_examples", "build_instructions", "pool_general_instructions"}


def test_the_envs_install_dependencies_only_and_the_data_env_is_part_of_the_model_env():
    model, data = env_packages("molorec"), env_packages("data")
    for name, packages in (("molorec", model), ("data", data)):
        # A path entry (pip: -e ..) resolves against the env file's folder, which a
        # workflow used as a module has only as a temporary copy.
        paths = [p for p in packages if p.startswith((".", "-")) or "/" in p]
        assert not paths, f"envs/{name}.yaml installs a path: {paths}"
    assert data.items() <= model.items()  # the same packages, with the same bounds
    assert {"torch", "transformers", "peft"} <= set(model) - set(data)
    pythons = {
        next(
            d
            for d in yaml.safe_load((REPO / f"envs/{env}.yaml").read_text())["dependencies"]
            if isinstance(d, str) and d.startswith("python")
        )
        for env in ("molorec", "data")
    }
    assert len(pythons) == 1, pythons


def run_script(tmp_path: Path, name: str, source: str) -> subprocess.CompletedProcess:
    script = tmp_path / name
    script.write_text(source)
    cmd = [sys.executable, str(script)]
    return subprocess.run(cmd, capture_output=True, text=True, env=light_env(tmp_path))


def test_the_guard_refuses_a_model_env_package_in_a_data_env_job_only(tmp_path):
    """The guard the workflow runs of the suite carry (conftest.light_env) is real: the copy
    Snakemake runs of a data-env script cannot import torch, may import what the data env
    has, and any other script is left alone."""
    assert {"report", "select_molorec"} | DATA_STAGE == set(data_env_scripts())
    refused = run_script(tmp_path, "tmp1a2b.report.py", "import torch\n")
    assert refused.returncode != 0
    assert "report runs in envs/data.yaml, which does not install 'torch'" in refused.stderr
    allowed = run_script(tmp_path, "tmp3c4d.report.py", "import polars, yaml, matplotlib\n")
    assert allowed.returncode == 0, allowed.stderr
    other = run_script(tmp_path, "tmp5e6f.fuse_adapters.py", "import torch\n")
    assert other.returncode == 0, other.stderr
    assert (tmp_path / ".light_env_jobs").read_text().split() == ["report", "report"]


def test_every_data_env_job_of_a_pipeline_run_ran_guarded(one_target_run):
    """The one-target pipeline ran (and passed) with every data-env job guarded: the report
    and the selection too, which read results of the model stages without torch."""
    workdir = one_target_run[0]
    assert set((workdir / ".light_env_jobs").read_text().split()) == set(data_env_scripts())


def bare_venv(root: Path) -> Path:
    """A Python with this one's packages (a .pth line) but no molorec: no pip, no install
    of the project, no PYTHONPATH; what a conda env built from envs/*.yaml holds."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_a_clone_and_a_module_run_in_a_python_without_molorec(tmp_path):
    python = bare_venv(tmp_path / "venv")
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    base["PATH"] = f"{python.parent}{os.pathsep}{base['PATH']}"
    probe = [str(python), "-c", "import molorec"]
    assert subprocess.run(probe, capture_output=True, env=base).returncode != 0
    config = yaml.safe_dump(one_target_config(), sort_keys=False)

    # A clone: snakemake -s <clone>/Snakefile, the data stage for real.
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "config.yaml").write_text(config)
    targets = [
        "results/data/general/instructions.parquet",
        "results/data/beauty/instructions.parquet",
    ]
    cmd = [str(python), "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2", *targets]
    proc = subprocess.run(
        cmd, cwd=clone, capture_output=True, text=True, env=light_env(clone, base)
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert all((clone / t).is_file() for t in targets)
    assert set((clone / ".light_env_jobs").read_text().split()) == DATA_STAGE

    # A module of the user's own workflow, in another folder: planned in full, and a job run.
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.yaml").write_text(config)
    (user / "Snakefile").write_text(
        'configfile: "config.yaml"\n\n\n'
        f'module molorec:\n    snakefile:\n        "{REPO / "Snakefile"}"\n'
        "    config:\n        config\n\n\n"
        "use rule * from molorec as molorec_*\n"
    )
    env = light_env(user, base)
    cmd = [str(python), "-m", "snakemake", "--cores", "2"]
    plan = subprocess.run(
        [*cmd, "-n", "--quiet", "rules"], cwd=user, capture_output=True, text=True, env=env
    )
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-5000:]
    for rule in ("molorec_ingest_domain", "molorec_train_general_adapter", "molorec_report"):
        assert rule in plan.stdout + plan.stderr
    run = subprocess.run(
        [*cmd, "results/data/beauty/items.parquet"],
        cwd=user,
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert (user / "results/data/beauty/items.parquet").is_file()
