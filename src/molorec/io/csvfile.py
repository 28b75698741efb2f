"""Plain CSV, the shape most users export from their own systems: an interactions file
(user, item and time columns, a rating column if there is one) and an items file (item and
title columns), each with a header; the domain's ``columns`` names the columns and
``separator`` the separator (default ``,``; quoting as CSV). Times are epoch seconds or
milliseconds (by magnitude) or ISO datetimes read as UTC (molorec.io.rawfile.parse_time_ms).
"""

from __future__ import annotations

from molorec.io.delimited import Fields, Table, read_events, read_titles

# The column names where the domain's columns does not give them.
DEFAULT_COLUMNS = {"user": "user", "item": "item", "time": "timestamp", "title": "title"}


def read_csv(
    interactions: str,
    items: str,
    on_truncated: str,
    max_malformed: float,
    columns=None,
    separator: str = ",",
    encoding: str = "utf-8",
):
    names = DEFAULT_COLUMNS | (columns or {})
    table = Table(separator, quoted=True, header=True, encoding=encoding)
    event_fields = {k: names[k] for k in ("user", "item", "time", "rating") if k in names}
    events, events_account = read_events(
        interactions, table, Fields(event_fields), on_truncated, max_malformed
    )
    titles, items_account = read_titles(
        items,
        table,
        Fields({"item": names["item"], "title": names["title"]}),
        on_truncated,
        max_malformed,
    )
    return events, titles, {"reviews": events_account, "meta": items_account}
