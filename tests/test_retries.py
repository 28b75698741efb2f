"""A killed training job (a preempted or timed-out one) that Snakemake retries resumes from
its last checkpoint instead of starting again, and the retry asks for more of what ran out
(the profiles' resources grow with ``attempt``)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import yaml
from conftest import REPO, one_target_config

DOMAIN = "beauty"


def training_process(workdir) -> psutil.Process | None:
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = proc.info["cmdline"] or []
        if "molorec.train" in cmdline and proc.info["cwd"] == str(workdir):
            return proc
    return None


def test_a_killed_training_job_is_retried_from_its_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = one_target_config()
    config["train"] |= {"max_steps": 12, "save_every": 2}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    # The local profile, with the SLURM profile's way of growing a retry's resources.
    profile = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    profile["set-resources"] = {"train_domain_adapter": {"mem_mb": "1000 * attempt"}}
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile/config.yaml").write_text(yaml.safe_dump(profile))

    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2"]
    cmd += ["--directory", str(workdir), "--workflow-profile", str(tmp_path / "profile")]
    cmd += ["--retries", "1", f"results/adapters/{DOMAIN}"]
    log = open(tmp_path / "snakemake.log", "w")
    run = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    checkpoint = workdir / f"results/checkpoints/{DOMAIN}/step-0000004"
    try:
        deadline = time.monotonic() + 600
        while not checkpoint.is_dir() and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.2)
        assert checkpoint.is_dir(), (tmp_path / "snakemake.log").read_text()[-3000:]
        victim = training_process(workdir)
        assert victim is not None
        victim.kill()  # as SLURM's preemption or time limit would, without warning
        assert run.wait(timeout=900) == 0, (tmp_path / "snakemake.log").read_text()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
        log.close()

    out = (tmp_path / "snakemake.log").read_text()
    assert "Trying to restart job" in out, out[-3000:]
    # The retry's request doubled: the first attempt's 1000 MB, then 2000.
    assert "mem_mb=1000" in out and "mem_mb=2000" in out, out[-3000:]
    train_log = (workdir / f"logs/train/{DOMAIN}.log").read_text()
    resumed = [line for line in train_log.splitlines() if "resumed from" in line]
    assert resumed, train_log[-2000:]
    step = int(resumed[0].split("(step ")[1].split(" ")[0])
    assert 4 <= step < 12, resumed
    # Every step once across the two attempts: the retry wrote only the steps after it.
    steps = (workdir / f"results/adapters/{DOMAIN}/train_log.csv").read_text().splitlines()[1:]
    assert [int(s.split(",")[0]) for s in steps] == list(range(1, 13))
