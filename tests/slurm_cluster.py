"""A real one-node SLURM cluster on this machine, for the tests.

munged, ``slurmctld -D`` and ``slurmd -D`` run as child processes of the test session, with
a fake GPU (gres ``File=/dev/null``) so that GPU requests are scheduled for real. Every
daemon listens on loopback only and is stopped by pid at the end. slurm.conf has to sit at
the default path (the job-step plugin strips SLURM_CONF), so a machine that already has
one belongs to a real cluster and is left alone.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

SLURM_DIR = Path("/etc/slurm")
# The daemons this file starts and the commands it and the tests call.
COMMANDS = (
    "munged",
    "munge",
    "slurmctld",
    "slurmd",
    "sinfo",
    "sbatch",
    "squeue",
    "scontrol",
    "scancel",
)
# What a cluster leaves running if its jobs outlive it: a step daemon per job, with the
# job's processes below it.
STEP_DAEMON = "slurmstepd"
# Client commands that a killed Snakemake (the SLURM executor) may leave running.
CLIENTS = ("scancel", "squeue", "sbatch", "srun", "sacct", "scontrol")
MARKER = "# Written by molorec's tests (tests/slurm_cluster.py); removed when they end.\n"


def unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    missing = [name for name in COMMANDS if not shutil.which(name)]
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} not found; apt install slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs"
    conf = SLURM_DIR / "slurm.conf"
    # One left by a killed test session carries the marker and is rewritten.
    if conf.exists() and not conf.read_text().startswith(MARKER):
        return f"{conf} exists: this machine belongs to a real cluster"
    return None


def node_hardware() -> dict[str, int]:
    """CPUs and memory as slurmd sees them: a node claiming more is marked invalid."""
    line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(part.split("=", 1) for part in line.split()[0:8] if "=" in part)
    return {"cpus": int(fields["CPUs"]), "memory": int(fields["RealMemory"])}


def slurm_conf(state: Path, node: str, cpus: int, memory: int) -> str:
    return (
        MARKER
        + f"""\
ClusterName=molorec-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
GresTypes=gpu
# No slurmdbd: finished jobs must stay visible to squeue long enough for Snakemake.
MinJobAge=600
ReturnToService=2
# Cancelled jobs get SIGKILL 2 s after SIGTERM (default 30 s): a test's teardown waits.
KillWait=2
SlurmdTimeout=60
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    )


# A count-only entry makes the node INVALID; a device file makes a GPU slurm can hand out.
# Two, so that two GPU jobs can run at once on the two cores this machine has.
GRES_CONF = "AutoDetect=off\nName=gpu File=/dev/null\nName=gpu File=/dev/zero\n"


class OneNodeCluster:
    """Start with ``start()``, stop with ``stop()``; the daemons' logs are in ``state``."""

    def __init__(self, state: Path):
        self.state = state
        self.node = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self.written: list[Path] = []
        self.started = time.time()

    def start(self, timeout: float = 60) -> None:
        self.started = time.time()
        (self.state / "ctld").mkdir(parents=True, exist_ok=True)
        (self.state / "d").mkdir(parents=True, exist_ok=True)
        hardware = node_hardware()
        SLURM_DIR.mkdir(exist_ok=True)
        # Leave some memory to the test session itself.
        memory = max(1000, hardware["memory"] - 2000)
        self._write(
            SLURM_DIR / "slurm.conf", slurm_conf(self.state, self.node, hardware["cpus"], memory)
        )
        self._write(SLURM_DIR / "gres.conf", GRES_CONF)
        self._start_munge()
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node])
        self._wait_idle(timeout)

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)
        self.written.append(path)

    def _start_munge(self) -> None:
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
            self.written.append(key)
        socket_dir = Path("/run/munge")
        socket_dir.mkdir(parents=True, exist_ok=True)
        # --force: munged refuses root otherwise; the default socket is where slurm looks.
        self._spawn("munged", ["munged", "--foreground", "--force"])
        self._wait(
            lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0,
            20,
            "munged",
        )

    def _spawn(self, name: str, cmd: list[str]) -> None:
        with open(self.state / f"{name}.out", "w") as log:  # the child keeps its own copy
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"{what} not ready after {timeout} s: {self.logs()}")

    def _wait_idle(self, timeout: float) -> None:
        def idle() -> bool:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True
            ).stdout.strip()
            return out == "idle"

        self._wait(idle, timeout, f"node {self.node}")

    def logs(self) -> str:
        parts = []
        for path in sorted(self.state.glob("*.log")) + sorted(self.state.glob("*.out")):
            parts.append(f"--- {path.name}\n{path.read_text()[-2000:]}")
        return "\n".join(parts)

    def cancel_jobs(self, timeout: float = 60) -> None:
        """Cancel every job of the cluster and wait until none of its processes is left. A
        step daemon detaches from slurmd, so stopping the daemons alone leaves the jobs
        running; and a job's processes can outlive their step daemon."""
        # The jobs' processes now: once their step daemon is gone they are orphans that no
        # process tree leads to.
        jobs = [p for step in cluster_processes((STEP_DAEMON,), self.started) for p in tree(step)]
        deadline = time.monotonic() + timeout
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--partition=debug"], capture_output=True)
            while time.monotonic() < deadline and (
                self.active_jobs() or cluster_processes((STEP_DAEMON,), self.started)
            ):
                time.sleep(0.5)
            # A killed Snakemake leaves its own scancel/squeue calls behind: let them finish
            # while the controller still answers them.
            while time.monotonic() < deadline and cluster_processes(CLIENTS, self.started):
                time.sleep(0.5)
        # Whatever outlived the cancel (a dead controller, a stuck step) is killed by pid.
        left = cluster_processes((STEP_DAEMON, *CLIENTS), self.started)
        kill([*jobs, *(p for proc in left for p in tree(proc))])

    def active_jobs(self) -> list[str]:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-t", "PENDING,RUNNING,CONFIGURING,COMPLETING"],
            capture_output=True,
            text=True,
        ).stdout
        return out.split()

    def stop(self) -> None:
        """Cancel the jobs, then stop every daemon this object started, by pid, and remove the
        files it wrote."""
        if self.procs:
            self.cancel_jobs()
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for path in reversed(self.written):
            path.unlink(missing_ok=True)
        self.written.clear()


def cluster_processes(names: tuple[str, ...], since: float) -> list[psutil.Process]:
    """Processes called ``names`` started since ``since`` (this cluster's, not another's)."""
    found = []
    for proc in psutil.process_iter(["name", "create_time"]):
        if proc.info["name"] in names and proc.info["create_time"] >= since - 1:
            found.append(proc)
    return found


def tree(proc: psutil.Process) -> list[psutil.Process]:
    """A process and its descendants (none if it is gone)."""
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


@contextmanager
def running_cluster(state: Path) -> Iterator[OneNodeCluster]:
    """A started cluster, stopped (its jobs cancelled first) however the block ends: normally,
    by a failure or by KeyboardInterrupt."""
    cluster = OneNodeCluster(state)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
