"""MovieLens, RecBole and plain CSV in the sample: one movie catalog (catalogs/movies.yaml)
written in each layout a reader of molorec.io knows, each with its own users.

Every layout gets the same kinds of defect, each noted in the sample's README: a line cut
in half, a rating of a movie the movie file lacks, a movie with an empty title, a user
rating one movie twice, and ratings that share a second (MovieLens has many).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from molorec.sample.common import DAY_S, HERE, catalog, day, days, simulate

FIRST_DAY, LAST_DAY = day(2000, 4, 25), day(2003, 2, 28)
STARS = (1, 2, 3, 4, 5)
STAR_WEIGHTS = (6, 11, 26, 35, 22)  # MovieLens 1M's spread of ratings
HALF_STARS = tuple(x / 2 for x in range(1, 11))
HALF_STAR_WEIGHTS = (1, 3, 2, 7, 4, 20, 13, 27, 8, 15)  # ml-latest: 4.0 and 3.0 lead
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


@dataclass
class Ratings:
    """One layout's users and movies, defects included, before it is written."""

    movies: list[tuple[int, str, list[str]]]  # (movie id, title, genres), id order
    rows: list[tuple[int, int, float, int]]  # (user, movie, rating, epoch s)
    notes: list[str]


def draw(rng: random.Random, n_users: int, half_stars: bool, where: str) -> Ratings:
    doc = yaml.safe_load((HERE / "catalogs" / "movies.yaml").read_text(encoding="utf-8"))
    lines = [(line["brand"], line["titles"]) for line in doc["lines"]]
    genres = [line["genres"] for line in doc["lines"]]
    items, item_lines = catalog([((), lines)])
    ids = list(range(1, len(items) + 1))
    rng.shuffle(ids)  # movie ids are not in series order
    untitled = rng.randrange(len(items))
    movies = sorted(
        (ids[i], "" if i == untitled else item.title, genres[item.line])
        for i, item in enumerate(items)
    )
    seqs = simulate(rng, item_lines, len(items), n_users, min_item_degree=5)
    stars, weights = (HALF_STARS, HALF_STAR_WEIGHTS) if half_stars else (STARS, STAR_WEIGHTS)
    rows, tied = [], 0
    for user, seq in enumerate(seqs, start=1):
        times = [d * DAY_S + rng.randrange(DAY_S) for d in days(rng, len(seq), FIRST_DAY, LAST_DAY)]
        if len(times) > 2 and rng.random() < 0.3:
            # Rated in one sitting: the next movie in the same second.
            k = rng.randrange(len(times) - 1)
            times[k + 1] = times[k]
            tied += 1
        for item, ts in zip(seq, times, strict=True):
            rows.append((user, ids[item], rng.choices(stars, weights)[0], ts))
    twice = rng.randrange(len(rows))
    user, movie, _, ts = rows[twice]
    rows.append((user, movie, rng.choices(stars, weights)[0], ts + 3 * DAY_S))
    unknown = len(items) + 1
    rows.append((1, unknown, stars[-1], rows[0][3] + 60))
    notes = [
        f"{where}: movie {ids[untitled]} has an empty title",
        f"{where}: user {user} rates movie {movie} twice (3 days apart)",
        f"{where}: user 1 rates movie {unknown}, which the movie file lacks",
        f"{where}: {tied} users rate two movies in the same second",
    ]
    return Ratings(movies, rows, notes)


def cut_one(rng: random.Random, lines: list[str], sep: str, where: str, notes: list[str]) -> None:
    """A line cut off before its last field (not the last line: a cut-off last line is a
    truncation)."""
    k = rng.randrange(1, len(lines) - 1)
    lines[k] = lines[k][: lines[k].rindex(sep)]
    notes.append(f"{where}: line {k + 1} stops before its last field")


def write_text(path: Path, lines: list[str], encoding: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(f"{line}\n" for line in lines).encode(encoding))
    return path


def csv_line(fields: list) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def stars_text(rating: float) -> str:
    return str(int(rating))


def write_movielens100k(out: Path, *, seed: int, n_users: int, notes: list[str]) -> list[Path]:
    rng = random.Random(seed)
    data = draw(rng, n_users, False, "`movielens100k/u.data`")
    rows = list(data.rows)
    rng.shuffle(rows)  # u.data is in no order
    ratings = [f"{u}\t{m}\t{stars_text(r)}\t{t}" for u, m, r, t in rows]
    cut_one(rng, ratings, "\t", "`movielens100k/u.data`", data.notes)
    movies = []
    for movie, title, genres in data.movies:
        year = title[-5:-1] if title else "1995"
        flags = "|".join("1" if g in genres else "0" for g in GENRES_100K)
        url = f"http://us.imdb.com/M/title-exact?{title.replace(' ', '%20')}"
        movies.append(f"{movie}|{title}|01-Jan-{year}||{url}|{flags}")
    notes += data.notes
    return [
        write_text(out / "movielens100k/u.data", ratings, "latin-1"),
        write_text(out / "movielens100k/u.item", movies, "latin-1"),
    ]


def write_movielens1m(out: Path, *, seed: int, n_users: int, notes: list[str]) -> list[Path]:
    rng = random.Random(seed)
    data = draw(rng, n_users, False, "`movielens1m/ratings.dat`")
    rows = sorted(data.rows, key=lambda row: row[0])  # by user; within a user, as drawn
    ratings = [f"{u}::{m}::{stars_text(r)}::{t}" for u, m, r, t in rows]
    cut_one(rng, ratings, "::", "`movielens1m/ratings.dat`", data.notes)
    movies = [f"{m}::{title}::{'|'.join(genres)}" for m, title, genres in data.movies]
    notes += data.notes
    return [
        write_text(out / "movielens1m/ratings.dat", ratings, "latin-1"),
        write_text(out / "movielens1m/movies.dat", movies, "latin-1"),
    ]


def write_movielens_latest(out: Path, *, seed: int, n_users: int, notes: list[str]) -> list[Path]:
    rng = random.Random(seed)
    data = draw(rng, n_users, True, "`movielens_latest/ratings.csv`")
    rows = sorted(data.rows, key=lambda row: row[:2])  # by user, then movie
    ratings = ["userId,movieId,rating,timestamp"]
    ratings += [f"{u},{m},{r:.1f},{t}" for u, m, r, t in rows]
    cut_one(rng, ratings, ",", "`movielens_latest/ratings.csv`", data.notes)
    movies = ["movieId,title,genres"]
    movies += [csv_line([m, title, "|".join(genres)]) for m, title, genres in data.movies]
    notes += data.notes
    return [
        write_text(out / "movielens_latest/ratings.csv", ratings, "utf-8"),
        write_text(out / "movielens_latest/movies.csv", movies, "utf-8"),
    ]


def write_recbole(out: Path, *, seed: int, n_users: int, notes: list[str], name: str) -> list[Path]:
    """RecBole's conversion of MovieLens: typed headers, the year in a field of its own."""
    rng = random.Random(seed)
    where = f"`recbole/{name}/{name}.inter`"
    data = draw(rng, n_users, False, where)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{m}\t{stars_text(r)}\t{t}" for u, m, r, t in data.rows]
    cut_one(rng, inter, "\t", where, data.notes)
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq"]
    for movie, title, genres in data.movies:
        year = title[-5:-1] if title else ""
        item.append(f"{movie}\t{title[:-7] if title else ''}\t{year}\t{' '.join(genres)}")
    notes += data.notes
    folder = out / "recbole" / name
    return [
        write_text(folder / f"{name}.inter", inter, "utf-8"),
        write_text(folder / f"{name}.item", item, "utf-8"),
    ]


def write_plain_csv(out: Path, *, seed: int, n_users: int, notes: list[str]) -> list[Path]:
    """A shop's own export: its column names, ISO times, quoted titles."""
    rng = random.Random(seed)
    data = draw(rng, n_users, False, "`csv/interactions.csv`")
    events = ["customer,product,stars,event_time"]
    for u, m, r, t in data.rows:
        when = dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        events.append(f"c{u:05d},m{m:04d},{stars_text(r)},{when}")
    cut_one(rng, events, ",", "`csv/interactions.csv`", data.notes)
    items = ["product,name"] + [csv_line([f"m{m:04d}", title]) for m, title, _ in data.movies]
    notes += data.notes
    return [
        write_text(out / "csv/interactions.csv", events, "utf-8"),
        write_text(out / "csv/items.csv", items, "utf-8"),
    ]


WRITERS = {
    "movielens100k": write_movielens100k,
    "movielens1m": write_movielens1m,
    "movielens_latest": write_movielens_latest,
    "recbole": write_recbole,
    "csv": write_plain_csv,
}
