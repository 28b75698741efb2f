"""The three Amazon review dump families (2014, 2018, 2023): reviews and item metadata.

Each reader returns events (user, item, ts_ms, line) and titles (item, title, line), where a
null title marks a metadata line with no usable title. Which key holds what differs by
release; everything after this module is format-free.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

import polars as pl

from molorec.io.rawfile import RATED_EVENT_SCHEMA, TITLE_SCHEMA, FileAccount, read_records
from molorec.io.titles import clean_title


@dataclass(frozen=True)
class Layout:
    """Where one release keeps the fields we need."""

    user: str
    item: str
    time: str
    ms_per_unit: int  # 2014/2018 store seconds, 2023 milliseconds
    rating: str  # the star rating, 1-5
    meta_item: str
    literal_meta: bool  # 2014 meta lines are Python dict literals, not JSON
    item_fallback: str | None = None


LAYOUTS = {
    "amazon2014": Layout("reviewerID", "asin", "unixReviewTime", 1000, "overall", "asin", True),
    "amazon2018": Layout("reviewerID", "asin", "unixReviewTime", 1000, "overall", "asin", False),
    # 2023 items are product families: variants (asin) are folded into parent_asin.
    "amazon2023": Layout(
        "user_id", "parent_asin", "timestamp", 1, "rating", "parent_asin", False, "asin"
    ),
}


def _is_id(value: object) -> bool:
    return isinstance(value, str) and value != "" and value.isprintable()


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def parse_literal(line: bytes) -> object:
    """A 2014 meta line: a Python literal, evaluated without ever running code."""
    return ast.literal_eval(line.decode("utf-8"))


def review_extractor(layout: Layout):
    def extract(rec: object) -> tuple | str:
        if not isinstance(rec, dict):
            return "not a JSON object"
        user = rec.get(layout.user)
        item = rec.get(layout.item)
        if item is None and layout.item_fallback:
            item = rec.get(layout.item_fallback)
        ts = _as_int(rec.get(layout.time))
        if not _is_id(user):
            return f"no usable {layout.user}"
        if not _is_id(item):
            return f"no usable {layout.item}"
        if ts is None or ts < 0:
            return f"no usable {layout.time}"
        # A missing or odd rating is no reason to drop the review: only min_rating reads it.
        rating = rec.get(layout.rating)
        usable = isinstance(rating, int | float) and not isinstance(rating, bool)
        return user, item, ts * layout.ms_per_unit, float(rating) if usable else None

    return extract


def meta_extractor(layout: Layout):
    def extract(rec: object) -> tuple | str:
        if not isinstance(rec, dict):
            return "not a record"
        item = rec.get(layout.meta_item)
        if not _is_id(item):
            return f"no usable {layout.meta_item}"
        return item, clean_title(rec.get("title"))

    return extract


def read_reviews(path, fmt: str, on_truncated: str, max_malformed: float):
    layout = LAYOUTS[fmt]
    return read_records(
        path, json.loads, review_extractor(layout), RATED_EVENT_SCHEMA, on_truncated, max_malformed
    )


def unreviewed_filter(layout: Layout, reviewed: set[str]):
    """Skip, unparsed, the metadata lines of items nobody reviewed.

    Full metadata dumps list every product (Beauty 2014: 259k lines for 12k reviewed
    items) and a literal_eval of a 2 KB line costs ~0.3 ms. The item key is found by a
    pattern; a line where it is not found is parsed in full, so nothing is lost.
    """
    key = re.compile(rb"['\"]" + layout.meta_item.encode() + rb"['\"]\s*:\s*['\"]([^'\"\\]+)['\"]")

    def skip(line: bytes) -> str | None:
        m = key.search(line)
        if m is not None and m.group(1).decode("utf-8", "replace") not in reviewed:
            return "unreviewed"
        return None

    return skip


def read_meta(path, fmt: str, on_truncated: str, max_malformed: float, reviewed=None):
    layout = LAYOUTS[fmt]
    parse = parse_literal if layout.literal_meta else json.loads
    skip = unreviewed_filter(layout, reviewed) if reviewed is not None else None
    return read_records(
        path, parse, meta_extractor(layout), TITLE_SCHEMA, on_truncated, max_malformed, skip
    )


def read_amazon(
    fmt: str, reviews: str, meta: str, on_truncated: str, max_malformed: float
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, FileAccount]]:
    events, reviews_account = read_reviews(reviews, fmt, on_truncated, max_malformed)
    reviewed = set(events["item"].unique().to_list())
    titles, meta_account = read_meta(meta, fmt, on_truncated, max_malformed, reviewed)
    return events, titles, {"reviews": reviews_account, "meta": meta_account}
