"""MOOCCube (XuetangX): course enrolment sequences and Chinese course names.

Sequences come from ``entities/user.json`` (``course_order`` paired with ``enroll_time``),
names from ``entities/course.json``. Everything is decoded and written as UTF-8.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from molorec.io.rawfile import (
    EVENT_SCHEMA,
    TITLE_SCHEMA,
    FileAccount,
    iter_lines,
    parse_time_ms,
    read_records,
    truncation_error,
)
from molorec.io.titles import clean_title


def read_enrolments(
    path: Path, on_truncated: str, max_malformed: float
) -> tuple[pl.DataFrame, FileAccount]:
    """One event per (user, course, time) entry; a record is an entry, not a line."""
    account = FileAccount(str(path), records=0)
    users, items, times, orders = [], [], [], []
    for lineno, line in iter_lines(path, account):
        try:
            rec = json.loads(line)
        except ValueError as exc:
            account.unparsable(lineno, f"{type(exc).__name__}: {str(exc)[:120]}")
            continue
        user = rec.get("id") if isinstance(rec, dict) else None
        courses = rec.get("course_order") if isinstance(rec, dict) else None
        enrolled = rec.get("enroll_time", []) if isinstance(rec, dict) else None
        if not isinstance(user, str) or not user or not isinstance(courses, list):
            account.bad(lineno, "no usable id or course_order")
            continue
        if not isinstance(enrolled, list):
            enrolled = []
        account.records += len(courses)
        for i, course in enumerate(courses):
            ts = parse_time_ms(enrolled[i]) if i < len(enrolled) else None
            if not isinstance(course, str) or not course:
                account.drop("no_course")
            elif ts is None:
                account.drop("no_time")
            else:
                users.append(user)
                items.append(course)
                times.append(ts)
                # File order, then position in course_order: the tie-break for equal times.
                orders.append(lineno * 100_000 + i)
    if account.truncated and on_truncated != "keep":
        raise truncation_error(account)
    account.check_malformed(max_malformed)
    events = pl.DataFrame(
        {"user": users, "item": items, "ts_ms": times, "line": orders},
        schema={**EVENT_SCHEMA, "line": pl.Int64},
    )
    return events, account


def _course_extract(rec: object) -> tuple | str:
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), str) or not rec["id"]:
        return "no usable course id"
    return rec["id"], clean_title(rec.get("name"))


def read_mooccube(
    folder: str, on_truncated: str, max_malformed: float
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, FileAccount]]:
    root = Path(folder)
    events, users_account = read_enrolments(
        root / "entities" / "user.json", on_truncated, max_malformed
    )
    titles, courses_account = read_records(
        root / "entities" / "course.json",
        json.loads,
        _course_extract,
        TITLE_SCHEMA,
        on_truncated,
        max_malformed,
    )
    return events, titles, {"reviews": users_account, "meta": courses_account}
