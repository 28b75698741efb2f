"""Ingest stage: raw dumps of one domain to interactions, items and a quality account.

Order of filters (each drop counted by reason on the interactions account):
duplicate (user, item) pairs keep the earliest; events of items without a usable title go;
the k-core is re-applied until stable, because removing untitled items can break it.
"""

from __future__ import annotations

import polars as pl

from molorec.io.formats import FORMATS
from molorec.io.parquet import write_json, write_parquet
from molorec.io.rawfile import FileAccount


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
    events: pl.DataFrame, titles: pl.DataFrame, kcore: int, account: FileAccount
) -> tuple[pl.DataFrame, pl.DataFrame]:
    # Sort by time; equal times keep file order (the line number), so the result is stable.
    events = events.sort("user", "ts_ms", "line")
    n = events.height
    events = events.unique(subset=["user", "item"], keep="first", maintain_order=True)
    account.drop("duplicate", n - events.height)

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
    interactions, items = build_interactions(events, titles, kcore, accounts["reviews"])
    quality = {
        "domain": domain,
        "format": spec["format"],
        "reviews": accounts["reviews"].as_dict(),
        "meta": accounts["meta"].as_dict(),
        "truncated": any(a.truncated for a in accounts.values()),
        "users": interactions["user"].n_unique(),
        "items": items.height,
        "interactions": interactions.height,
    }
    return interactions, items, quality


def run(domain: str, spec: dict, data: dict, out: dict) -> dict:
    """The rule's entry point: write interactions.parquet, items.parquet and quality.json."""
    interactions, items, quality = ingest_domain(
        domain, spec, data["kcore"], data["max_malformed_fraction"]
    )
    write_parquet(interactions, out["interactions"])
    write_parquet(items, out["items"])
    write_json(quality, out["quality"])
    return quality
