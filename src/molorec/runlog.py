"""Logging for rule scripts: everything a job says goes to the rule's declared log file."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def log_to(path: str | Path):
    """Send logging records and stderr (tracebacks included) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        stderr, sys.stderr = sys.stderr, fh
        try:
            yield logging.getLogger("molorec")
        except BaseException:
            logging.getLogger("molorec").exception("job failed")
            raise
        finally:
            sys.stderr = stderr
            root.removeHandler(handler)


def use_threads(threads: int) -> int:
    """Run torch on ``threads`` CPU threads (0: torch's default) and say so in the job's log,
    with the CPUs SLURM allocated where the job is a SLURM job: the rule's threads are what
    the SLURM profile asks for (--cpus-per-task), so the two must agree."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    used = torch.get_num_threads()
    job = os.environ.get("SLURM_JOB_ID")
    cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_JOB_CPUS_PER_NODE")
    where = f"; SLURM job {job}, {cpus} CPUs allocated" if job else ""
    logging.getLogger("molorec").info("torch threads: %d%s", used, where)
    return used
