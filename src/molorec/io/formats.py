"""The raw formats a domain can be read from, one entry each: the domain keys that name
its inputs, the files a folder input must hold, and the reader. The config check
(molorec.config), the rules (the files a domain's ingest depends on) and the ingest read
this table; the schema's format names and required keys follow it (tests/test_io.py).
Adding a format is one reader module and one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import PurePath

from molorec.io.amazon import read_amazon
from molorec.io.csvfile import read_csv
from molorec.io.mooccube import read_mooccube
from molorec.io.movielens import read_movielens
from molorec.io.recbole import read_recbole


@dataclass(frozen=True)
class RawFormat:
    # The keys of domains.<domain> that name the inputs, in the reader's order.
    keys: tuple[str, ...]
    # (events, titles, accounts) from the inputs, on_truncated, max_malformed and options.
    reader: Callable
    # Files a folder input must hold (relative to it; {name}: the folder's own name, as
    # RecBole names its files); none where the inputs are files.
    within: tuple[str, ...] = ()
    # Further keys of domains.<domain> the reader takes, as keyword arguments.
    options: tuple[str, ...] = ()
    # Whether its events carry a rating (so that a domain may set min_rating).
    ratings: bool = False

    def files(self, spec: dict) -> list[str]:
        """The raw files of a domain: what its ingest reads."""
        if self.within:
            return [
                f"{spec[key]}/{name.format(name=PurePath(spec[key]).name)}"
                for key in self.keys
                for name in self.within
            ]
        return [spec[key] for key in self.keys]

    def read(self, spec: dict, max_malformed: float):
        on_truncated = spec.get("on_truncated", "error")
        options = {key: spec[key] for key in self.options if key in spec}
        inputs = (spec[key] for key in self.keys)
        return self.reader(*inputs, on_truncated, max_malformed, **options)


def movielens(release: str, ratings: str, movies: str) -> RawFormat:
    reader = partial(read_movielens, release)
    return RawFormat(("path",), reader, (ratings, movies), ("encoding",), ratings=True)


FORMATS = {
    "amazon2014": RawFormat(("reviews", "meta"), partial(read_amazon, "amazon2014"), ratings=True),
    "amazon2018": RawFormat(("reviews", "meta"), partial(read_amazon, "amazon2018"), ratings=True),
    "amazon2023": RawFormat(("reviews", "meta"), partial(read_amazon, "amazon2023"), ratings=True),
    "mooccube": RawFormat(
        ("path",), read_mooccube, within=("entities/user.json", "entities/course.json")
    ),
    "movielens100k": movielens("movielens100k", "u.data", "u.item"),
    "movielens1m": movielens("movielens1m", "ratings.dat", "movies.dat"),
    "movielens_csv": movielens("movielens_csv", "ratings.csv", "movies.csv"),
    "recbole": RawFormat(
        ("path",), read_recbole, ("{name}.inter", "{name}.item"), ("columns",), ratings=True
    ),
    "csv": RawFormat(
        ("interactions", "items"),
        read_csv,
        options=("columns", "separator", "encoding"),
        ratings=True,
    ),
}

# Each reader option (domains.<domain>.<key>) -> the formats that take it.
FORMAT_OPTIONS = {
    key: [name for name, raw in FORMATS.items() if key in raw.options]
    for key in sorted({key for raw in FORMATS.values() for key in raw.options})
}
