"""Logging for rule scripts: everything a job says goes to the rule's declared log file."""

from __future__ import annotations

import logging
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
