"""Reading raw dump files line by line, with honest accounting.

Real dumps come gzip-compressed or plain, are sometimes cut short by an interrupted
download, and contain lines that do not parse. This module turns a file into numbered
lines, detects truncation, and keeps the counts every stage later reports.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from molorec.parallel import WORKERS, forked
from molorec.schema import defaults

# The frames every format's reader returns: events (one per interaction, its file line
# alongside) and titles (one per metadata record).
EVENT_SCHEMA = {"user": pl.String, "item": pl.String, "ts_ms": pl.Int64}
# Events of a format with ratings: a null rating where a record has none.
RATED_EVENT_SCHEMA = {**EVENT_SCHEMA, "rating": pl.Float64}
TITLE_SCHEMA = {"item": pl.String, "title": pl.String}

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 1 << 22
FLUSH_RECORDS = 1 << 19


class RawInputError(ValueError):
    """A raw input file that cannot be used as it is; the message names file, line and reason."""


@dataclass
class FileAccount:
    """What happened to every line of one raw file: read, kept, or dropped by reason."""

    path: str
    lines: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    truncated: bool = False
    # Records when a line holds several (a MOOCCube user line lists many enrolments);
    # None means one record per line.
    records: int | None = None
    first_bad_line: int | None = None
    first_bad_reason: str | None = None
    # The number of a last line with no newline after it (a plain file cut off mid-line
    # ends so); a record that does not parse there is a truncation, not a malformed line.
    unterminated: int | None = None
    # What the reader chose, for quality.json: the fields it read, the encoding, ...
    notes: dict = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += n

    def drop_line(self, reason: str) -> None:
        """A whole line dropped before parsing (blank, cut off by truncation)."""
        self.dropped[reason] += 1
        if self.records is not None:
            self.records += 1

    def bad(self, lineno: int, reason: str) -> None:
        """A line that does not parse: counted as malformed, the first one remembered."""
        self.dropped["malformed"] += 1
        if self.records is not None:
            self.records += 1
        if self.first_bad_line is None:
            self.first_bad_line, self.first_bad_reason = lineno, reason

    def check_malformed(self, max_fraction: float) -> None:
        n_bad = self.dropped.get("malformed", 0)
        if n_bad and n_bad > max_fraction * self.lines:
            raise RawInputError(
                f"{self.path}: {n_bad} malformed lines of {self.lines} "
                f"({n_bad / max(self.lines, 1):.3%}), above the limit of {max_fraction:.3%} "
                f"(data.max_malformed_fraction); first bad line {self.first_bad_line}: "
                f"{self.first_bad_reason}"
            )

    def as_dict(self) -> dict:
        return {
            "file": self.path,
            "lines": self.lines,
            "records": self.lines if self.records is None else self.records,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "truncated": self.truncated,
        } | ({"notes": self.notes} if self.notes else {})

    def unparsable(self, lineno: int, reason: str) -> None:
        """A record that does not parse: malformed, or the cut-off last line of a plain file."""
        if lineno == self.unterminated:
            self.truncated = True
            self.drop_line("truncated")
        else:
            self.bad(lineno, reason)


def _plain_chunks(fh) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK_BYTES):
        yield chunk


def iter_blocks(path: str | Path, account: FileAccount) -> Iterator[tuple[int, bytes]]:
    """Yield (number of its first line, block) for the file's lines in blocks of whole
    lines, each block ending with a newline; every line is counted on the account here.

    The last line of a file that does not end with a newline comes as a block of its own,
    without one (noted as ``unterminated``), unless the gzip stream was cut short: then it is
    dropped as 'truncated'. Gzip or plain is detected from the first bytes, not the name.
    """
    path = Path(path)
    lineno = 0
    rest = b""
    with open(path, "rb") as fh:
        gz = fh.read(2) == GZIP_MAGIC
        fh.seek(0)
        chunks = _gzip_stream(fh, account) if gz else _plain_chunks(fh)
        for chunk in chunks:
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            block, rest = data[:cut], data[cut:]
            if block:
                n = block.count(b"\n")
                account.lines += n
                yield lineno + 1, block
                lineno += n
    if rest:
        lineno += 1
        account.lines += 1
        if account.truncated:
            account.drop_line("truncated")
        elif rest.strip():
            account.unterminated = lineno
            yield lineno, rest
        else:
            account.drop_line("blank")


def block_lines(first: int, block: bytes, account: FileAccount) -> tuple[list[int], list[bytes]]:
    """The numbers and bytes of a block's non-blank lines; blank ones are counted."""
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    numbers, kept = [], []
    for lineno, line in enumerate(lines, first):
        if line.strip():
            numbers.append(lineno)
            kept.append(line)
        else:
            account.drop_line("blank")
    return numbers, kept


def iter_lines(path: str | Path, account: FileAccount) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, line bytes) for every line; blank lines are counted, not yielded.

    A line left incomplete by a truncated gzip stream is not yielded: it is dropped as
    'truncated' (iter_blocks).
    """
    for first, block in iter_blocks(path, account):
        yield from zip(*block_lines(first, block, account), strict=True)


def _gzip_stream(fh, account: FileAccount) -> Iterator[bytes]:
    """gzip decompression with truncation detection based on the decompressor's end state."""
    decomp = zlib.decompressobj(wbits=31)
    in_member = False
    while raw := fh.read(CHUNK_BYTES):
        while raw:
            in_member = True
            try:
                out = decomp.decompress(raw)
            except zlib.error as exc:
                raise RawInputError(f"{account.path}: corrupt gzip data ({exc})") from exc
            if out:
                yield out
            if decomp.eof:
                # Concatenated gzip members are legal: continue with a fresh decompressor.
                in_member = False
                raw = decomp.unused_data
                decomp = zlib.decompressobj(wbits=31)
            else:
                raw = b""
    if in_member:
        tail = decomp.flush()
        if tail:
            yield tail
        account.truncated = True


TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


def parse_time_ms(value: object) -> int | None:
    """A time as epoch milliseconds: datetime strings (read as UTC) or epoch numbers
    (seconds unless the magnitude says milliseconds); None where it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return int(value) if abs(value) > 10**11 else int(value * 1000)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_time_ms(int(text))
        try:
            return parse_time_ms(float(text))
        except ValueError:
            pass
        for fmt in TIME_FORMATS:
            try:
                stamp = datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
            except ValueError:
                continue
            return int(stamp.timestamp() * 1000)
    return None


def truncation_error(account: FileAccount) -> RawInputError:
    last = account.lines - account.dropped.get("truncated", 0)
    how = "its last line stops mid-record" if account.unterminated else "the gzip stream ends early"
    return RawInputError(
        f"{account.path}: the file is truncated ({how}); the last complete line is line {last}. "
        "Re-download the file, or set on_truncated: keep for this domain to use the "
        "complete lines."
    )


# Fewer lines to parse in a block than this are parsed here: a pool's round trip costs more.
PARALLEL_LINES = 256
PARSE_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)


def parsed_records(reader: tuple[Callable, Callable], lines: list[bytes]) -> list[tuple | str]:
    """Each line's record, or the reason it has none (it does not parse, or extract says
    why it is unusable)."""
    parse, extract = reader
    out: list[tuple | str] = []
    for line in lines:
        try:
            value = parse(line)
        except PARSE_ERRORS as exc:
            out.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            continue
        out.append(extract(value))
    return out


def read_records(
    path: str | Path,
    parse: Callable[[bytes], object],
    extract: Callable[[object], tuple | str],
    schema: dict[str, pl.DataType],
    on_truncated: str = "error",
    max_malformed_fraction: float = defaults("data")["max_malformed_fraction"],
    skip: Callable[[list[bytes]], list[str | None]] | None = None,
    whole_block: Callable[[bytes], pl.DataFrame | None] | None = None,
) -> tuple[pl.DataFrame, FileAccount]:
    """Parse every line and extract one record from it.

    ``parse`` turns the line into a value (raising on malformed input); ``extract`` returns
    the record tuple, ordered as ``schema``, or the reason why a parsed line is unusable.
    ``skip``, if given, names for each of a block's lines a reason to drop it without
    parsing it, or None (cheap filters in front of an expensive parser). ``whole_block``, if
    given, may read a block of whole lines at once: it returns the block's records, one per
    line, only where every line is a usable record that parse and extract would give the
    same way, and None otherwise (the block is then read line by line). Lines are parsed in
    up to molorec.parallel.WORKERS processes. Returns the records with a ``line`` column
    (1-based line number) and the file's account.
    """
    account = FileAccount(str(path))
    names = list(schema)
    columns: list[list] = [[] for _ in range(len(names) + 1)]
    frames: list[pl.DataFrame] = []
    full_schema = {**schema, "line": pl.Int64}

    def flush() -> None:
        # Arrow columns hold the records far more compactly than Python objects do.
        frames.append(
            pl.DataFrame(dict(zip(full_schema, columns, strict=True)), schema=full_schema)
        )
        for col in columns:
            col.clear()

    def prepared(first: int, block: bytes, pool) -> tuple[list[int] | None, Callable]:
        """(the numbers of a block's lines to parse, what gives their records, started), or
        (None, what gives the records of a block read whole)."""
        if whole_block is not None and block.endswith(b"\n"):
            records = whole_block(block)
            if records is not None:
                lines = pl.int_range(first, first + records.height, dtype=pl.Int64, eager=True)
                frame = records.select(names).with_columns(lines.alias("line"))
                return None, lambda: frame.cast(full_schema)
        numbers, lines = block_lines(first, block, account)
        if skip is not None:
            reasons = skip(lines)
            for reason, n in Counter(r for r in reasons if r is not None).items():
                account.drop(reason, n)
            kept = [i for i, r in enumerate(reasons) if r is None]
            numbers, lines = [numbers[i] for i in kept], [lines[i] for i in kept]
        # Fewer lines than PARALLEL_LINES are one job, parsed here when collected.
        step = len(lines) if len(lines) < PARALLEL_LINES else -(-len(lines) // (2 * pool.n))
        parts = pool.submit([(lines[i : i + step],) for i in range(0, len(lines), step or 1)])
        return numbers, lambda: [rec for part in parts() for rec in part]

    def collect(numbers: list[int] | None, records: Callable) -> None:
        if numbers is None:
            if columns[-1]:
                flush()
            frames.append(records())
            return
        for lineno, rec in zip(numbers, records(), strict=True):
            if isinstance(rec, str):
                account.unparsable(lineno, rec)
                continue
            for col, v in zip(columns, rec, strict=False):  # the last column is the line
                col.append(v)
            columns[-1].append(lineno)
            if len(columns[-1]) >= FLUSH_RECORDS:
                flush()

    # One block is parsed while the next is read: its lines in the workers, if any.
    with forked(parsed_records, (parse, extract), WORKERS.get()) as pool:
        pending = None
        for first, block in iter_blocks(path, account):
            ready, pending = pending, prepared(first, block, pool)
            if ready is not None:
                collect(*ready)
        if pending is not None:
            collect(*pending)
    flush()
    if account.truncated and on_truncated != "keep":
        raise truncation_error(account)
    account.check_malformed(max_malformed_fraction)
    return pl.concat(frames, rechunk=True), account
