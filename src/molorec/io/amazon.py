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


# An id the block reader takes: printable ASCII (a block with any other is read line by
# line, where _is_id judges it).
ASCII_ID = r"^[\x20-\x7e]+$"
# The largest time that still fits epoch milliseconds in an int64.
MAX_TS = (2**63 - 1) // 1000


def usable_time(layout: Layout, ts: int | None) -> bool:
    """A time that is there, not negative, and fits epoch milliseconds in an int64."""
    return ts is not None and 0 <= ts <= MAX_TS // layout.ms_per_unit


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
        if not usable_time(layout, ts):
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


def review_block_reader(layout: Layout):
    """A whole block of review lines decoded at once (msgspec, typed), for read_records.

    The decoder keeps only our fields and is strict where the line-by-line reader is
    lenient or says why: it fails on a field of another type (a time as a string or a
    float, a number as an id, a boolean), NaN, a lone surrogate, or a line that is not an
    object, and it skips or joins what json.loads would count (blank lines, two objects on a
    line). The block is then read line by line, as it is also when any record would be
    dropped (no usable id or time), so the records and the reasons are those of
    review_extractor, only faster. Duplicate keys: the last one counts, as in json.loads.
    """
    import msgspec

    fields = [layout.user, layout.item, layout.time, layout.rating]
    if layout.item_fallback:
        fields.append(layout.item_fallback)
    types = {layout.time: int | None, layout.rating: float | None}
    record = msgspec.defstruct(
        "Review", [(f, types.get(f, str | None), None) for f in fields], gc=False
    )
    decoder = msgspec.json.Decoder(record)
    # A blank line (bytes.strip's whitespace only): the block's first, or after a newline.
    first_blank = re.compile(rb"[ \t\r\x0b\x0c]*\n")
    blank = re.compile(rb"\n[ \t\r\x0b\x0c]*\n")

    def read(block: bytes) -> pl.DataFrame | None:
        if first_blank.match(block) or blank.search(block):
            return None
        try:
            rows = decoder.decode_lines(block)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if len(rows) != block.count(b"\n"):
            return None

        def column(field: str) -> list:
            return [getattr(r, field) for r in rows]

        items = column(layout.item)
        if layout.item_fallback:
            fallback = column(layout.item_fallback)
            items = [f if i is None else i for i, f in zip(items, fallback, strict=True)]
        times = column(layout.time)
        if not all(usable_time(layout, t) for t in times):
            return None
        records = pl.DataFrame(
            {
                "user": column(layout.user),
                "item": items,
                "ts_ms": times,
                "rating": column(layout.rating),
            },
            schema=RATED_EVENT_SCHEMA,
        )
        for name in ("user", "item"):
            if not records[name].str.contains(ASCII_ID).fill_null(False).all():
                return None
        return records.with_columns(pl.col("ts_ms") * layout.ms_per_unit)

    return read


def read_reviews(path, fmt: str, on_truncated: str, max_malformed: float):
    layout = LAYOUTS[fmt]
    return read_records(
        path,
        json.loads,
        review_extractor(layout),
        RATED_EVENT_SCHEMA,
        on_truncated,
        max_malformed,
        whole_block=review_block_reader(layout),
    )


def unreviewed_filter(layout: Layout, reviewed: set[str]):
    """Skip, unparsed, the metadata lines of items nobody reviewed.

    Full metadata dumps list every product (Beauty 2014: 259k lines for 12k reviewed
    items) and a literal_eval of a 2 KB line costs ~0.1 ms. The item key is found by a
    pattern, over a block's lines at once; a line where it is not found is parsed in full,
    so nothing is lost. Lines that are not UTF-8 are matched one by one, as bytes.
    """
    space = r"[ \t\n\r\x0b\x0c]*"  # bytes' \s: ASCII whitespace only
    pattern = rf"['\"]{re.escape(layout.meta_item)}['\"]{space}:{space}['\"]([^'\"\\]+)['\"]"
    key = re.compile(pattern.encode())
    known = pl.Series(sorted(reviewed), dtype=pl.String)

    def one(line: bytes) -> str | None:
        m = key.search(line)
        if m is not None and m.group(1).decode("utf-8", "replace") not in reviewed:
            return "unreviewed"
        return None

    def skip(lines: list[bytes]) -> list[str | None]:
        try:
            text = pl.Series([line.decode("utf-8") for line in lines], dtype=pl.String)
        except UnicodeDecodeError:
            return [one(line) for line in lines]
        found = text.str.extract(pattern, 1)
        unreviewed = found.is_not_null() & ~found.is_in(known)
        return [("unreviewed" if u else None) for u in unreviewed.to_list()]

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
