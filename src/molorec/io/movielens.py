"""MovieLens (GroupLens): ratings and movie titles, in the three layouts of its releases.

- 100K: ``u.data`` (tab-separated ``user item rating timestamp``) and ``u.item``
  (``id|title|release date|video release date|IMDb URL|`` and 19 genre flags), Latin-1.
- 1M and 10M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and ``movies.dat``
  (``MovieID::Title::Genres``), Latin-1 in 1M.
- latest, 20M, 25M, 32M: ``ratings.csv`` (``userId,movieId,rating,timestamp``) and
  ``movies.csv`` (``movieId,title,genres``, titles quoted where they hold commas), UTF-8.

Timestamps are epoch seconds. The encoding is ``auto`` unless the domain names one: UTF-8,
else Latin-1 per line, so ``Misérables`` reaches the prompt as written in either release.
Many ratings share a second; equal times keep the file's order (its line numbers), as in
every format, so a rerun orders them the same.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from molorec.io.delimited import Fields, Table, read_events, read_titles


@dataclass(frozen=True)
class Release:
    ratings: str
    movies: str
    ratings_table: Table
    movies_table: Table
    # Our fields -> positions (no header) or header names.
    rating_fields: dict
    movie_fields: dict


RELEASES = {
    "movielens100k": Release(
        "u.data",
        "u.item",
        Table("\t", n_fields=4),
        Table("|", n_fields=24, after_title=22),
        {"user": 0, "item": 1, "rating": 2, "time": 3},
        {"item": 0, "title": 1},
    ),
    "movielens1m": Release(
        "ratings.dat",
        "movies.dat",
        Table("::", n_fields=4),
        Table("::", n_fields=3, after_title=1),
        {"user": 0, "item": 1, "rating": 2, "time": 3},
        {"item": 0, "title": 1},
    ),
    "movielens_csv": Release(
        "ratings.csv",
        "movies.csv",
        Table(",", quoted=True, header=True),
        Table(",", quoted=True, header=True),
        {"user": "userId", "item": "movieId", "rating": "rating", "time": "timestamp"},
        {"item": "movieId", "title": "title"},
    ),
}


def read_movielens(
    release: str, folder: str, on_truncated: str, max_malformed: float, encoding: str = "auto"
):
    layout = RELEASES[release]
    root = Path(folder)
    events, ratings = read_events(
        root / layout.ratings,
        replace(layout.ratings_table, encoding=encoding),
        Fields(dict(layout.rating_fields)),
        on_truncated,
        max_malformed,
        time_scale_ms=1000,
    )
    titles, movies = read_titles(
        root / layout.movies,
        replace(layout.movies_table, encoding=encoding),
        Fields(dict(layout.movie_fields)),
        on_truncated,
        max_malformed,
    )
    return events, titles, {"reviews": ratings, "meta": movies}
