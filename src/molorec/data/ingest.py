"""Ingest stage: raw dumps of one domain to interactions, items and a quality account.

Order of filters (each drop counted by reason on the interactions account): ratings
below the domain's min_rating go (where it is set); duplicate (user, item) pairs keep the
earliest; events of items the metadata does not know go (unknown_item), then those of items
without a usable title (no_title); the k-core is re-applied until stable, because removing
untitled items can break it. Equal times keep the raw file's order (its line numbers).
"""

from __future__ import annotations

import polars as pl

from molorec import parallel
from molorec.io.formats import FORMATS
from molorec.io.parquet import write_json, write_parquet
from molorec.io.rawfile import FileAccount, RawInputError


def read_domain(spec: dict, max_malformed: float):
    """Events, titles and file accounts of one domain, whatever its raw format."""
    return FORMATS[spec["format"]].read(spec, max_malformed)


def resolve_titles(titles: pl.DataFrame, account: FileAccount) -> pl.DataFrame:
    """First usable title per item, in file order; every other metadata line is counted."""
    usable = titles.filter(pl.col("title").is_not_null())
    first = usable.filter(pl.col("item").is_first_distinct())
    account.drop("no_title", titles.height - usable.height)
    account.drop("duplicate", usable.height - first.height)
    account.kept = first.height
    return first.select("item", "title")


def kcore_filter(events: pl.DataFrame, k: int) -> pl.DataFrame:
    """Keep users and items with at least k events, repeated until nothing changes."""
    if k <= 1:
        return events
    while True:
        kept = events.filter((pl.len().over("user") >= k) & (pl.len().over("item") >= k))
        if kept.height == events.height:
            return kept
        events = kept


def build_interactions(
    events: pl.DataFrame,
    titles: pl.DataFrame,
    kcore: int,
    account: FileAccount,
    known: pl.DataFrame | None = None,
    min_rating: float | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``known``: every item of the metadata, titled or not; ``min_rating``: keep ratings
    >= it (None: keep all)."""
    if min_rating is not None:
        if "rating" not in events.columns:
            raise RawInputError(
                f"{account.path}: min_rating is set but the file has no rating field"
            )
        n = events.height
        events = events.filter(pl.col("rating").is_not_null())
        account.drop("no_rating", n - events.height)
        n = events.height
        events = events.filter(pl.col("rating") >= min_rating)
        account.drop("below_min_rating", n - events.height)
    # Sort by time; equal times keep file order (the line number), so the result is stable.
    events = events.sort("user", "ts_ms", "line")
    n = events.height
    events = events.unique(subset=["user", "item"], keep="first", maintain_order=True)
    account.drop("duplicate", n - events.height)

    if known is not None:
        n = events.height
        events = events.join(known, on="item", how="semi", maintain_order="left")
        account.drop("unknown_item", n - events.height)

    n = events.height
    events = events.join(titles.select("item"), on="item", how="semi", maintain_order="left")
    account.drop("no_title", n - events.height)

    n = events.height
    events = kcore_filter(events, kcore)
    account.drop("kcore", n - events.height)
    account.kept = events.height

    interactions = events.select("user", "item", (pl.col("ts_ms") // 1000).alias("ts"))
    items = titles.join(interactions.select(pl.col("item").unique()), on="item").sort("item")
    return interactions, items


def ingest_domain(
    domain: str, spec: dict, kcore: int, max_malformed: float
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    events, raw_titles, accounts = read_domain(spec, max_malformed)
    titles = resolve_titles(raw_titles, accounts["meta"])
    known = raw_titles.select(pl.col("item").unique())
    min_rating = spec.get("min_rating")
    interactions, items = build_interactions(
        events, titles, kcore, accounts["reviews"], known, min_rating
    )
    quality = {
        "domain": domain,
        "format": spec["format"],
        "min_rating": min_rating,
        "reviews": accounts["reviews"].as_dict(),
        "meta": accounts["meta"].as_dict(),
        "truncated": any(a.truncated for a in accounts.values()),
        "users": interactions["user"].n_unique(),
        "items": items.height,
        "interactions": interactions.height,
    }
    return interactions, items, quality


def run(domain: str, spec: dict, data: dict, out: dict, workers: int = 1) -> dict:
    """The rule's entry point: write interactions.parquet, items.parquet and quality.json;
    ``workers``: the job's processes (molorec.parallel)."""
    with parallel.workers(workers):
        interactions, items, quality = ingest_domain(
            domain, spec, data["kcore"], data["max_malformed_fraction"]
        )
    write_parquet(interactions, out["interactions"])
    write_parquet(items, out["items"])
    write_json(quality, out["quality"])
    return quality
