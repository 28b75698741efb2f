"""GPU claims for local runs (molorec.devices): each GPU job on its own card."""

import copy
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import run_workflow

from molorec import devices
from molorec.plan import SCENARIOS, fusion_dir

HOLD = "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); time.sleep(60)"


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A machine with the cards CUDA_VISIBLE_DEVICES lists, its lock folder in tmp_path."""
    monkeypatch.setenv(devices.LOCKS_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)

    def cards(visible):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        return {**os.environ}

    yield cards
    devices.release_gpus()


def holder(env, gpus=1):
    """Another job: python -m molorec.devices holding its card until killed."""
    cmd = [sys.executable, "-m", "molorec.devices", "--gpus", str(gpus), "--"]
    proc = subprocess.Popen(
        [*cmd, sys.executable, "-c", HOLD], env=env, stdout=subprocess.PIPE, text=True
    )
    return proc, proc.stdout.readline().strip()


def test_two_jobs_run_on_different_cards_and_a_killed_job_frees_its_card(machine):
    env = machine("0,1")
    other, its_card = holder(env)
    try:
        assert its_card == "0"
        assert devices.claim_gpus(1, timeout_s=2) == ["1"]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    finally:
        other.kill()
        other.wait()
    devices.release_gpus()
    # The kernel dropped the killed job's lock: its card is free again.
    again, card = holder(env)
    again.kill()
    again.wait()
    assert card == "0"


def test_a_job_waits_while_the_only_card_is_taken(machine):
    env = machine("0")
    other, _ = holder(env)
    try:
        with pytest.raises(TimeoutError, match="no 1 free GPU"):
            devices.claim_gpus(1, wait_s=0.1, timeout_s=1)
    finally:
        other.kill()
        other.wait()
    assert devices.claim_gpus(1, wait_s=0.1, timeout_s=5) == ["0"]


def test_a_job_claims_several_cards_for_one_command(machine):
    env = machine("GPU-a,GPU-b,GPU-c")
    proc, cards = holder(env, gpus=2)
    proc.kill()
    proc.wait()
    assert cards == "GPU-a,GPU-b"


def test_a_card_takes_as_many_jobs_as_it_has_slots(machine, monkeypatch):
    """MOLOREC_JOBS_PER_GPU=2: two jobs share the one card, a third waits for a slot."""
    env = machine("0") | {devices.SLOTS_ENV: "2"}
    monkeypatch.setenv(devices.SLOTS_ENV, "2")
    other, its_card = holder(env)
    try:
        assert its_card == "0"
        assert devices.claim_gpus(1, timeout_s=2) == ["0"]
        third = [sys.executable, "-c", "from molorec import devices; devices.claim_gpus(1, 0.1, 1)"]
        waited = subprocess.run(third, env=env, capture_output=True, text=True)
        assert "TimeoutError: no 1 free GPU(s) among 0" in waited.stderr
    finally:
        other.kill()
        other.wait()
    monkeypatch.setenv(devices.SLOTS_ENV, "0")
    with pytest.raises(ValueError, match="MOLOREC_JOBS_PER_GPU='0'"):
        devices.claim_gpus(1)


def test_slurm_jobs_keep_the_cards_slurm_gave_them(machine, monkeypatch, tmp_path):
    machine("3")
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    assert devices.claim_gpus(1) == ["3"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert not (tmp_path / "locks").exists() or not any((tmp_path / "locks").iterdir())


def test_without_a_card_the_job_runs_on_the_cpu(machine):
    machine("")
    assert devices.claim_gpus(1) == []
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_asking_for_more_cards_than_the_machine_has_is_an_error(machine):
    machine("0")
    with pytest.raises(RuntimeError, match="asks for 2 GPUs but this machine shows 1"):
        devices.claim_gpus(2)


def job_span(log: Path) -> tuple[datetime, datetime]:
    """When a job's script began and ended: the first and last stamped lines of its log."""
    stamps = [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        for line in log.read_text().splitlines()
        if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line)
    ]
    return stamps[0], stamps[-1]


@pytest.mark.parametrize("gpus, together", [(1, False), (2, True)])
def test_the_local_profile_runs_gpu_jobs_one_per_declared_gpu(
    one_target_run, tmp_path, gpus, together
):
    """Two fusion jobs that ask for a GPU each, ready together, on 4 cores: with the local
    profile's gpu=1 they run one after the other; given gpu=2 they run at once (the control:
    nothing else keeps them apart)."""
    source, config = one_target_run[0], copy.deepcopy(one_target_run[1])
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir, symlinks=True)
    config["resources"]["fuse"]["gpu"] = 1
    targets = [fusion_dir("beauty", s) for s in SCENARIOS]
    extra = ["--cores", "4", *targets, "--forcerun", "fuse_adapters"]
    if gpus != 1:  # the command line replaces the profile's whole list
        extra += ["--resources", "mem_mb=6000", f"gpu={gpus}"]
    proc = run_workflow(workdir, config, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (a_start, a_end), (b_start, b_end) = (
        job_span(workdir / f"logs/fusion/beauty/{s}.log") for s in SCENARIOS
    )
    overlap = a_start < b_end and b_start < a_end
    assert overlap == together, [(a_start, a_end), (b_start, b_end)]
