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


class Forked:
    """``func(shared, *job)`` for lists of jobs, in forked processes where possible."""

    def __init__(self, func: Callable, shared: object, n: int):
        self.func, self.shared, self.n = func, shared, n
        self.pool = None

    def submit(self, jobs: list[tuple]) -> Callable[[], list]:
        """Start the jobs; returns what gives their results, in order. Forks the pool at
        the first call with more than one job, so a caller that never needs it never
        forks; with one process the jobs run when their results are asked for."""
        if self.n <= 1 or len(jobs) <= 1 or not can_fork():
            return lambda: [self.func(self.shared, *job) for job in jobs]
        if self.pool is None:
            global _FORKED
            _FORKED = (self.func, self.shared)
            try:
                self.pool = mp.get_context("fork").Pool(self.n)
            finally:
                _FORKED = None
        return self.pool.map_async(_call, jobs).get

    def map(self, jobs: list[tuple]) -> list:
        return self.submit(jobs)()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


@contextmanager
def forked(func: Callable, shared: object, n: int) -> Iterator[Forked]:
    """A Forked over ``n`` processes, its pool closed at the end."""
    pool = Forked(func, shared, n)
    try:
        yield pool
    finally:
        pool.close()
