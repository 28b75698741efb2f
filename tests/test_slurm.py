"""The pipeline on a real one-node SLURM cluster (tests/slurm_cluster.py) with --executor slurm:
every job is a SLURM job, GPU rules ask SLURM for a GPU, and the metrics equal a local run's."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import REPO, one_target_config, result_files, run_workflow, tree_bytes
from slurm_cluster import running_cluster, unavailable

import molorec.plan

TEST_PROFILE = REPO / "tests/slurm-profile"
GPU_RULES = set(molorec.plan.GPU_RULES)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_cluster()
    with running_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def require_cluster() -> None:
    why = unavailable()
    if why:
        # CI installs SLURM and sets this: there the test must run, not skip.
        if os.environ.get("MOLOREC_REQUIRE_SLURM"):
            pytest.fail(f"MOLOREC_REQUIRE_SLURM is set but {why}")
        pytest.skip(why)


def leftovers(workdir: Path) -> list[str]:
    """Processes of a test cluster or of a run in ``workdir`` that are still alive."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if (
            proc.info["name"] in ("slurmstepd", "slurmd", "slurmctld", "munged", "srun")
            or str(workdir) in cmdline
            or (proc.info["cwd"] or "").startswith(str(workdir))
        ):
            found.append(f"{proc.info['pid']} {proc.info['name']}: {cmdline[:200]}")
    return found


def test_an_interrupted_run_leaves_no_process_behind(tmp_path):
    """Ctrl-C while a SLURM job runs: the teardown cancels the jobs, waits for them, then
    stops the daemons. Runs before the module's cluster fixture starts (file order), since
    one machine holds one test cluster."""
    require_cluster()
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = one_target_config()
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    log = open(tmp_path / "child.log", "w")
    child = subprocess.Popen(
        [sys.executable, str(REPO / "tests/slurm_interrupted_run.py"), str(tmp_path), str(workdir)],
        cwd=REPO / "tests",
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 300
        running = []
        while not running and time.monotonic() < deadline and child.poll() is None:
            time.sleep(1)
            running = [
                job
                for job in slurm_jobs(check=False)
                if job.get("WorkDir") == str(workdir) and job.get("JobState") == "RUNNING"
            ]
        assert running, (tmp_path / "child.log").read_text()[-3000:]
        time.sleep(2)  # the job's step and its processes are up
        os.killpg(child.pid, signal.SIGINT)
        assert child.wait(timeout=180) != 0
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        log.close()
    assert leftovers(workdir) == [], (tmp_path / "child.log").read_text()[-3000:]
    assert not (Path("/etc/slurm") / "slurm.conf").exists()


def slurm_jobs(check: bool = True) -> list[dict[str, str]]:
    """Every job the controller knows (finished ones stay MinJobAge seconds), as key=value."""
    out = subprocess.run(
        ["scontrol", "show", "job", "--details", "--oneliner"],
        capture_output=True,
        text=True,
        check=check,
    ).stdout
    return [
        dict(re.findall(r"(\w+)=(\S*)", line))
        for line in out.splitlines()
        if line.startswith("JobId=")
    ]


def local_rules() -> set[str]:
    """The rule names of the Snakefile's localrules directive."""
    text = (REPO / "Snakefile").read_text()
    block = text.split("\nlocalrules:\n", 1)[1].split("\n\n", 1)[0]
    return {name.strip(" ,") for name in block.splitlines() if name.strip(" ,")}


def planned_counts(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table: jobs per rule."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_profiles_request_gpus_for_the_same_rules():
    user = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    test = yaml.safe_load((TEST_PROFILE / "config.yaml").read_text())
    assert user["executor"] == test["executor"] == "slurm"
    assert user["set-resources"].keys() == test["set-resources"].keys()
    for profile in (user, test):
        assert GPU_RULES == {r for r, res in profile["set-resources"].items() if res["gpu"] >= 1}
        # A GPU job's CPUs are its threads (set-threads), one number: no second CPU request
        # that the scripts would not know of.
        assert profile["set-threads"].keys() == GPU_RULES
        for res in profile["set-resources"].values():
            assert not {"cpus_per_gpu", "cpus_per_task"} & res.keys(), res
    # A retry asks for more time and memory (tests/test_retries.py runs the mechanism).
    for res in user["set-resources"].values():
        assert "attempt" in str(res["mem_mb"]) and "attempt" in str(res["runtime"]), res


def test_a_job_logs_its_torch_threads_beside_its_slurm_cpus(monkeypatch, caplog):
    """molorec.runlog.use_threads: the line test_pipeline_runs_as_slurm_jobs reads."""
    import torch

    from molorec.runlog import use_threads

    before = torch.get_num_threads()
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    try:
        with caplog.at_level("INFO", logger="molorec"):
            assert use_threads(3) == 3 == torch.get_num_threads()
        assert "torch threads: 3; SLURM job 17, 3 CPUs allocated" in caplog.text
        monkeypatch.delenv("SLURM_JOB_ID")
        caplog.clear()
        with caplog.at_level("INFO", logger="molorec"):
            use_threads(1)
        assert caplog.messages == ["torch threads: 1"]
    finally:
        torch.set_num_threads(before)


def test_pipeline_runs_as_slurm_jobs(cluster, one_target_run, tmp_path):
    _, config, local_metrics, local_files = one_target_run
    proc = run_workflow(tmp_path, config, "--workflow-profile", str(TEST_PROFILE))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:] + cluster.logs()

    jobs = [j for j in slurm_jobs() if j.get("WorkDir") == str(tmp_path)]
    per_rule: dict[str, list[dict]] = {}
    for job in jobs:
        # The plugin names each job's rule in its comment: rule_<name>_wildcards_...
        rule = re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", job["Comment"]).group(1)
        per_rule.setdefault(rule, []).append(job)
    planned = planned_counts(out)
    # The Snakefile's localrules (the target rule and the ones that take seconds) run in
    # Snakemake itself; every other job is a SLURM job.
    local = local_rules()
    assert "all" in local and not local & GPU_RULES
    assert {rule: len(js) for rule, js in per_rule.items()} == {
        rule: n for rule, n in planned.items() if rule not in local
    }
    assert {"report", "select_molorec"} <= planned.keys() & local
    assert all(j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0" for j in jobs)

    for rule, rule_jobs in per_rule.items():
        for job in rule_jobs:
            # Requested (TresPerJob) and given (JOB_GRES): one GPU for the GPU rules only.
            if rule in GPU_RULES:
                assert (job.get("TresPerJob"), job.get("JOB_GRES")) == ("gres:gpu:1", "gpu:1"), job
            else:
                assert (job.get("TresPerJob"), job.get("JOB_GRES")) == (None, "(null)"), job

    # Each GPU job ran torch on as many threads as SLURM gave it CPUs: the profile's
    # set-threads (2, where the test config's resources say 1), as the job's log says.
    threads = yaml.safe_load((TEST_PROFILE / "config.yaml").read_text())["set-threads"]
    logged = {}
    for log in (tmp_path / "logs").rglob("*.log"):
        for m in re.finditer(r"torch threads: (\d+); SLURM job (\d+)", log.read_text()):
            logged[m[2]] = int(m[1])
    for rule in GPU_RULES & per_rule.keys():
        for job in per_rule[rule]:
            assert (logged.get(job["JobId"]), int(job["NumCPUs"])) == (threads[rule],) * 2, (
                rule,
                job,
            )

    assert result_files(tmp_path) == local_files
    assert tree_bytes(tmp_path / "results") == local_metrics


def test_paper_config_plans_on_the_cluster_profile(tmp_path):
    """README's cluster command, dry: config/paper.yaml replaces config.yaml (not merged
    with the sample's domains) and the profile's GPU requests reach the jobs."""
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    for spec in paper["domains"].values():
        for key in ("reviews", "meta"):
            (tmp_path / spec[key]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / spec[key]).touch()
    # The user's profile with four GPUs for the domain adapters, as README says to edit it
    # (--set-resources on the command line would replace the profile's, not add to them).
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    profile["set-resources"]["train_domain_adapter"]["gpu"] = 4
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile/config.yaml").write_text(yaml.safe_dump(profile))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(tmp_path), "--configfile", str(REPO / "config/paper.yaml")]
    cmd += ["--workflow-profile", str(tmp_path / "profile"), "--dry-run"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]

    counts = planned_counts(out)
    assert counts["ingest_domain"] == 8 + 3
    assert counts["train_general_adapter"] == 1 and counts["train_domain_adapter"] == 3
    # Per target: one fusion job per scenario (its whole lr grid), one LLM evaluation job
    # per scenario and split (every variant).
    assert counts["fuse_adapters"] == 3 * 2
    assert counts["evaluate_llm"] == 3 * 2 * 2
    general = out.split("rule train_general_adapter:", 1)[1].split("\n\n", 1)[0]
    # The profile's requests, not the local profile's caps (profiles/default: 6 GB, the
    # submitting machine's cores), which a --profile would have loaded beside it.
    assert re.search(r"resources: .*\bmem_mb=64000\b.*\bgpu=1\b", general), general
    assert re.search(r"threads: 8\b", general) and "--threads 8" in general
    assert "python -m molorec.train" in general
    # Four GPUs for one training job: one process per GPU through accelerate.
    domain = out.split("rule train_domain_adapter:", 1)[1].split("\n\n", 1)[0]
    assert "accelerate launch --multi_gpu --num_machines 1 --num_processes 4" in domain


def test_config_values_alone_keep_the_sample_config(tmp_path):
    """--config without --configfile: config.yaml is read and the values win over it (the
    Snakefile loads config.yaml only where no --configfile gave the domains)."""
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    (tmp_path / "resources").symlink_to(REPO / "resources")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--nolock"]
    cmd += ["--directory", str(tmp_path), "--dry-run", "--printshellcmds", "--config", "seed=7"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    sample = yaml.safe_load((REPO / "config.yaml").read_text())
    assert planned_counts(out)["ingest_domain"] == len(sample["domains"])
    seeds = set(re.findall(r'"seed": (\d+)', out))
    assert seeds == {"7"}, seeds
