"""Delimited text tables: the raw shape of MovieLens, RecBole atomic files and plain CSV.

One record per line, fields split by a separator (several characters, as MovieLens' ``::``,
or one, with CSV quoting), the fields found by position or by the header's names. The
lines, truncation and the accounts are molorec.io.rawfile's, as for every format: a line
with the wrong number of fields or an unreadable user, item, time or rating is malformed;
a last line cut off mid-record is a truncation (``on_truncated``).
"""

from __future__ import annotations

import codecs
import csv
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from molorec.io.rawfile import (
    EVENT_SCHEMA,
    RATED_EVENT_SCHEMA,
    TITLE_SCHEMA,
    FileAccount,
    RawInputError,
    iter_lines,
    parse_time_ms,
    read_records,
)
from molorec.io.titles import clean_title


class Decoder:
    """Bytes to text. ``auto``: UTF-8, and Latin-1 for a line that is not UTF-8 (MovieLens
    100K and 1M are Latin-1, the later releases UTF-8; a Latin-1 accent is never valid
    UTF-8, so each line decodes right), counted. Any other name: that codec, strictly."""

    def __init__(self, encoding: str):
        if encoding != "auto":
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise RawInputError(f"encoding {encoding!r}: Python knows no such codec") from None
        self.encoding, self.latin1 = encoding, 0

    def __call__(self, raw: bytes) -> str:
        if self.encoding != "auto":
            return raw.decode(self.encoding)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.latin1 += 1
            return raw.decode("latin-1")

    def note(self, account: FileAccount) -> None:
        account.notes["encoding"] = self.encoding
        if self.latin1:
            account.notes["latin1_lines"] = self.latin1


@dataclass(frozen=True)
class Table:
    """How one file of a format is laid out."""

    separator: str
    quoted: bool = False  # CSV quoting ("a, b" is one field)
    header: bool = False  # the first line names the fields
    # Fields per line where there is no header (a positional layout).
    n_fields: int | None = None
    # Positional layouts: the fields after the title, so that a title holding the separator
    # is joined back (MovieLens titles are the one free text).
    after_title: int = 0
    encoding: str = "auto"

    def split(self, text: str) -> list[str]:
        text = text.rstrip("\r")
        if not self.quoted:
            return text.split(self.separator)
        try:
            return next(csv.reader([text], delimiter=self.separator, strict=True))
        except csv.Error as exc:
            raise ValueError(f"CSV: {exc}") from None


@dataclass
class Fields:
    """Our fields (user, item, time, rating / item, title) -> the file's position or name."""

    where: dict[str, int | str]
    used: dict[str, str] = field(default_factory=dict)  # what quality.json says was read


def first_line(path: str | Path) -> bytes | None:
    for _, line in iter_lines(path, FileAccount(str(path))):
        return line
    return None


def _header(path: str | Path, table: Table, decode) -> tuple[bytes, list[str]]:
    """The header line as read, and the field names it gives."""
    line = first_line(path)
    if line is None:
        raise RawInputError(f"{path}: the file is empty; it needs a header line")
    return line, [name.strip() for name in table.split(decode(line))]


def header_fields(path: str | Path, table: Table, decode) -> list[str]:
    return _header(path, table, decode)[1]


def resolve(
    path, table: Table, fields: Fields, decode
) -> tuple[dict[str, int], bytes | None, int | None]:
    """Positions of our fields, the header line to skip (None without a header) and the
    number of fields a line has (None: any)."""
    if not table.header:
        return {k: int(v) for k, v in fields.where.items()}, None, table.n_fields
    line, names = _header(path, table, decode)
    positions = {}
    for ours, theirs in fields.where.items():
        if theirs not in names:
            raise RawInputError(
                f"{path}: line 1 (the header) has no field {theirs!r} for the {ours}; "
                f"it has {names}"
            )
        positions[ours] = names.index(theirs)
        fields.used[ours] = theirs
    return positions, line, len(names)


def _read_table(
    path, table, fields, decode, header, width, extract, schema, on_truncated, max_malformed
):
    """read_records on a table's lines: the header skipped, each line split into its
    fields, and the fields and encoding used noted on the file's account."""
    skip = (lambda lines: ["header" if x == header else None for x in lines]) if header else None
    frame, account = read_records(
        path, _fields_of(table, decode, width), extract, schema, on_truncated, max_malformed, skip
    )
    if fields.used:
        account.notes["fields"] = dict(fields.used)
    decode.note(account)
    return frame, account


def _fields_of(table: Table, decode, width: int | None):
    def parse(line: bytes) -> list[str]:
        values = table.split(decode(line))
        if width is not None and (
            len(values) < width or (len(values) > width and not table.after_title)
        ):
            raise ValueError(f"{len(values)} fields, {width} expected")
        return values

    return parse


def read_events(
    path: str | Path,
    table: Table,
    fields: Fields,
    on_truncated: str,
    max_malformed: float,
    time_scale_ms: int | None = None,
) -> tuple[pl.DataFrame, FileAccount]:
    """Events (user, item, ts_ms[, rating], line) of an interactions table. Times are epoch
    seconds (``time_scale_ms`` 1000), or parsed by molorec.io.rawfile.parse_time_ms."""
    decode = Decoder(table.encoding)
    at, header, width = resolve(path, table, fields, decode)
    rated = "rating" in at
    schema = RATED_EVENT_SCHEMA if rated else EVENT_SCHEMA

    def extract(values: list[str]) -> tuple | str:
        user, item = values[at["user"]].strip(), values[at["item"]].strip()
        if not user or not item:
            return "empty user or item"
        raw_time = values[at["time"]].strip()
        if time_scale_ms is not None:
            ts = int(raw_time) * time_scale_ms if raw_time.isdigit() else None
        else:
            ts = parse_time_ms(raw_time)
        if ts is None:
            return f"time {raw_time[:40]!r} is not a time"
        if not rated:
            return user, item, ts
        try:
            rating = float(values[at["rating"]])
        except ValueError:
            return f"rating {values[at['rating']][:40]!r} is not a number"
        return user, item, ts, rating

    return _read_table(
        path, table, fields, decode, header, width, extract, schema, on_truncated, max_malformed
    )


def read_titles(
    path: str | Path, table: Table, fields: Fields, on_truncated: str, max_malformed: float
) -> tuple[pl.DataFrame, FileAccount]:
    """Titles (item, title, line) of an items table; a null title marks an unusable one."""
    decode = Decoder(table.encoding)
    at, header, width = resolve(path, table, fields, decode)

    def extract(values: list[str]) -> tuple | str:
        item = values[at["item"]].strip()
        if not item:
            return "empty item id"
        start = at["title"]
        if table.after_title:
            title = table.separator.join(values[start : len(values) - table.after_title])
        else:
            title = values[start]
        return item, clean_title(title)

    return _read_table(
        path,
        table,
        fields,
        decode,
        header,
        width,
        extract,
        TITLE_SCHEMA,
        on_truncated,
        max_malformed,
    )
