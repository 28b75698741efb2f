"""The raw formats a domain can be read from, one entry each: the domain keys that name
its inputs, the files a folder input must hold, and the reader. The config check
(molorec.config), the rules (the files a domain's ingest depends on) and the ingest read
this table; the schema's format names and required keys follow it (tests/test_io.py).
Adding a format is one reader module and one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from molorec.io.amazon import read_amazon
from molorec.io.mooccube import read_mooccube


@dataclass(frozen=True)
class RawFormat:
    # The keys of domains.<domain> that name the inputs, in the reader's order.
    keys: tuple[str, ...]
    # (events, titles, accounts) from the inputs, on_truncated and max_malformed.
    reader: Callable
    # Files a folder input must hold (relative to it); none where the inputs are files.
    within: tuple[str, ...] = ()

    def files(self, spec: dict) -> list[str]:
        """The raw files of a domain: what its ingest reads."""
        if self.within:
            return [f"{spec[key]}/{name}" for key in self.keys for name in self.within]
        return [spec[key] for key in self.keys]

    def read(self, spec: dict, max_malformed: float):
        on_truncated = spec.get("on_truncated", "error")
        return self.reader(*(spec[key] for key in self.keys), on_truncated, max_malformed)


FORMATS = {
    "amazon2014": RawFormat(("reviews", "meta"), partial(read_amazon, "amazon2014")),
    "amazon2018": RawFormat(("reviews", "meta"), partial(read_amazon, "amazon2018")),
    "amazon2023": RawFormat(("reviews", "meta"), partial(read_amazon, "amazon2023")),
    "mooccube": RawFormat(
        ("path",), read_mooccube, within=("entities/user.json", "entities/course.json")
    ),
}
