"""Work split over forked processes that read their parent's data.

The data stage's jobs are CPU-bound Python (a literal parse per metadata line, seeded draws
per example) on data the parent already holds. Forked workers inherit that data and the
functions (closures included) instead of having them pickled; only each job's arguments and
results cross between processes. Where fork is not safe (anything but Linux: macOS's
system frameworks are not fork-safe) the jobs run in this process, with the same results.
"""

from __future__ import annotations

import contextvars
import multiprocessing as mp
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Processes a data job may use (its Snakemake threads); read by molorec.io.rawfile, whose
# readers are called through every format's own reader.
WORKERS = contextvars.ContextVar("molorec_workers", default=1)

# (function, shared data) of the pool being forked; a child reads its inherited copy.
_FORKED: tuple[Callable, object] | None = None


def _call(job: tuple):
    func, shared = _FORKED
    return func(shared, *job)


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


@contextmanager
def workers(n: int) -> Iterator[None]:
    """Let the data readers in this block use up to ``n`` processes."""
    token = WORKERS.set(max(1, int(n)))
    try:
        yield
    finally:
        WORKERS.reset(token)


@contextmanager
def forked(func: Callable, shared: object, n: int) -> Iterator[Callable[[list], list]]:
    """Yields ``run(jobs) -> [func(shared, *job) for job in jobs]``, over ``n`` forked
    processes when that is possible and more than one job is given, else here. The pool
    is forked at the first such call, so a caller that never needs it never forks."""
    pool = None

    def run(jobs: list[tuple]) -> list:
        nonlocal pool
        if n <= 1 or len(jobs) <= 1 or not can_fork():
            return [func(shared, *job) for job in jobs]
        if pool is None:
            global _FORKED
            _FORKED = (func, shared)
            try:
                pool = mp.get_context("fork").Pool(n)
            finally:
                _FORKED = None
        return pool.map(_call, jobs)

    try:
        yield run
    finally:
        if pool is not None:
            pool.close()
            pool.join()
