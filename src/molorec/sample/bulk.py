"""Large synthetic Amazon 2014 dumps for the benchmarks, up to the size of Books: vectorised
with numpy, streamed out in chunks, seeded (numpy.random.default_rng)."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import numpy as np

from molorec.sample.amazon import IMG_2014, RELEASES
from molorec.sample.common import (
    ALNUM,
    ALNUM_MIXED,
    DAY_S,
    RATING_WEIGHTS,
    RATINGS,
    WORDS,
    gzip_out,
    review_time,
    review_words,
)

FIRST_DAY, LAST_DAY = RELEASES["amazon2014"].first_day, RELEASES["amazon2014"].last_day
ADJECTIVES, NOUNS, BRANDS = (WORDS[k] for k in ("bulk_adjectives", "bulk_nouns", "bulk_brands"))

_CHUNK = 200_000
_HELPFUL_MAX = 30
_TEXTS_PER_RATING = 400
_RATING_P = np.array(RATING_WEIGHTS) / sum(RATING_WEIGHTS)
_REVIEW_LINE = (
    '{"reviewerID": "%s", "asin": "%s", %s"helpful": %s, "reviewText": %s, '
    '"overall": %s, "summary": %s, %s}\n'
)


def _core_degrees(
    rng: np.random.Generator, n: int, total: int, sigma: float, cap: int
) -> np.ndarray:
    """Degrees >= 5 summing to total, lognormal-skewed, each at most cap."""
    weights = rng.lognormal(0.0, sigma, n)
    deg = np.full(n, 5, dtype=np.int64)
    extra = total - 5 * n
    while extra > 0:
        p = np.where(deg < cap, weights, 0.0)
        deg += np.bincount(rng.choice(n, size=extra, p=p / p.sum()), minlength=n)
        over = np.maximum(deg - cap, 0)
        deg -= over
        extra = int(over.sum())  # redistribute what went over the cap
    return deg


def _rewire_duplicates(
    rng: np.random.Generator, users: np.ndarray, items: np.ndarray, n_items: int
) -> None:
    """Swap item ends of repeated (user, item) edges until all pairs are unique.

    Swaps keep every user's and item's degree, so the graph stays 5-core.
    """
    for _ in range(200):
        keys = users.astype(np.int64) * n_items + items
        order = np.argsort(keys)
        sorted_keys = keys[order]
        dup = order[1:][sorted_keys[1:] == sorted_keys[:-1]]
        del keys, order, sorted_keys
        if dup.size == 0:
            return
        partners = rng.integers(0, items.size, dup.size)
        # Few duplicates: sequential swaps are simplest and exactly degree-preserving.
        for d, p in zip(dup.tolist(), partners.tolist(), strict=True):
            items[d], items[p] = items[p], items[d]
    raise RuntimeError("could not make (user, item) pairs unique; graph too dense")


def _np_codes(
    rng: np.random.Generator,
    n: int,
    length: int,
    alphabet: str,
    unique_prefix: int | None = None,
) -> np.ndarray:
    """n random codes (numpy str array); with unique_prefix, those leading
    characters are distinct, which keeps codes distinct even when truncated."""
    table = np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)
    if unique_prefix is None:
        draws = table[rng.integers(0, len(alphabet), (n, length))]
        return draws.view(f"S{length}").ravel().astype(f"U{length}")
    draws = table[rng.integers(0, len(alphabet), (n + n // 50 + 16, length))]
    prefix = np.ascontiguousarray(draws[:, :unique_prefix]).view(f"S{unique_prefix}")
    # Keep first occurrences in draw order so the result depends on the seed only.
    _, first = np.unique(prefix.ravel(), return_index=True)
    keep = np.sort(first)
    if keep.size < n:
        raise RuntimeError("code space too small for the requested count")
    return draws[keep[:n]].view(f"S{length}").ravel().astype(f"U{length}")


def _text_pools(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """JSON-encoded review texts and summaries, _TEXTS_PER_RATING per rating."""
    rng = random.Random(seed)
    texts, summaries = [], []
    for rating in RATINGS:
        for _ in range(_TEXTS_PER_RATING):
            summary, text = review_words(rng, rating)
            texts.append(json.dumps(text))
            summaries.append(json.dumps(summary))
    return np.array(texts, dtype=object), np.array(summaries, dtype=object)


def _day_tails(lo: int, hi: int) -> np.ndarray:
    """'"unixReviewTime": ..., "reviewTime": "..."' for every day in [lo, hi)."""
    return np.array(
        [
            f'"unixReviewTime": {d * DAY_S}, "reviewTime": "{review_time(d * DAY_S)}"'
            for d in range(lo, hi)
        ],
        dtype=object,
    )


def write_amazon2014_synthetic(
    out_dir: Path,
    category: str,
    n_users: int,
    n_items: int,
    n_reviews: int,
    seed: int = 0,
    n_meta_items: int | None = None,
) -> tuple[Path, Path]:
    """Write a large 5-core Amazon-2014 style dump for benchmarks.

    ``n_meta_items`` (>= n_items) makes the meta file list that many products, the extra
    ones never reviewed, as in the real dumps (Beauty: 259,204 meta lines for 12,101
    reviewed items); its lines are in asin order, reviewed and unreviewed mixed.

    Writes ``reviews_{category}_5.json.gz`` and ``meta_{category}.json.gz``:
    every user and item has >= 5 reviews, (user, item) pairs are unique, and
    about 1.5% of items lack a title.  Books size (603,668 users / 367,982
    items / 8,898,041 reviews) takes about a minute and under 0.5 GB RSS.
    """
    if min(n_users, n_items) < 5 or n_reviews < 5 * max(n_users, n_items):
        raise ValueError("need >= 5 users, >= 5 items and >= 5 reviews per user/item")
    if n_reviews > n_users * n_items // 4:
        raise ValueError("too many reviews for unique (user, item) pairs")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)

    # Configuration model: lay out degree stubs, shuffle one side, fix repeats.
    user_deg = _core_degrees(rng, n_users, n_reviews, 1.0, n_items // 2)
    item_deg = _core_degrees(rng, n_items, n_reviews, 1.5, n_users // 2)
    users = np.repeat(np.arange(n_users, dtype=np.int32), user_deg)
    items = np.repeat(np.arange(n_items, dtype=np.int32), item_deg)
    del user_deg, item_deg
    rng.shuffle(items)
    _rewire_duplicates(rng, users, items, n_items)
    order = np.argsort(items, kind="stable")  # real 5-core files group by item
    users, items = users[order], items[order]
    del order

    # Strings are built once per user / item / day and looked up per line.
    lengths = rng.integers(12, 15, n_users)
    reviewer_ids = np.array(
        [
            "A" + c[:k]
            for c, k in zip(
                _np_codes(rng, n_users, 14, ALNUM, 12).tolist(), lengths.tolist(), strict=True
            )
        ],
        dtype=object,
    )
    n_meta = max(n_items, n_meta_items or 0)
    if category == "Books":  # ISBN-10 style asins
        asin_arr = _np_codes(rng, n_meta, 10, string.digits, 10)
    else:
        asin_arr = np.char.add("B00", _np_codes(rng, n_meta, 7, ALNUM, 7))
    asins = asin_arr.astype(object)
    del asin_arr
    names = np.array(
        ['"reviewerName": "Amazon Customer", ']
        + [
            f'"reviewerName": "{f[0]}. {s}", '
            for f in WORDS["first_names"]
            for s in WORDS["last_names"]
        ]
        + [
            f'"reviewerName": "{f} {s}", '
            for f in WORDS["first_names"]
            for s in WORDS["last_names"]
        ]
        + [""],  # a few reviews have no reviewerName at all
        dtype=object,
    )
    user_names = names[rng.integers(0, names.size, n_users)]
    helpful = np.array(
        [f"[{a}, {b}]" for b in range(_HELPFUL_MAX + 1) for a in range(b + 1)],
        dtype=object,
    )
    overall = np.array([f"{r}.0" for r in RATINGS], dtype=object)
    texts, summaries = _text_pools(seed)
    tails = _day_tails(FIRST_DAY, LAST_DAY)
    span = LAST_DAY - FIRST_DAY

    reviews_path = out_dir / f"reviews_{category}_5.json.gz"
    with gzip_out(reviews_path, level=1) as out:
        for lo in range(0, n_reviews, _CHUNK):
            u, i = users[lo : lo + _CHUNK], items[lo : lo + _CHUNK]
            n = u.size
            # Review volume grows over the years, so skew days towards the end.
            days = (rng.random(n) ** 0.4 * span).astype(np.int64)
            stars = rng.choice(5, size=n, p=_RATING_P)
            total = np.minimum(rng.geometric(0.45, n) - 1, _HELPFUL_MAX)
            found = rng.binomial(total, 0.7)
            # One pool index per review keeps its summary and text consistent.
            pick = stars * _TEXTS_PER_RATING + rng.integers(0, _TEXTS_PER_RATING, n)
            columns = (
                reviewer_ids[u],
                asins[i],
                user_names[u],
                helpful[total * (total + 1) // 2 + found],
                texts[pick],
                overall[stars],
                summaries[pick],
                tails[days],
            )
            chunk = "".join(
                map(_REVIEW_LINE.__mod__, zip(*(c.tolist() for c in columns), strict=True))
            )
            out.write(chunk.encode("ascii"))
    del users, items

    label = category.replace("_and_", " & ").replace("_", " ")
    meta_path = out_dir / f"meta_{category}.json.gz"
    asins = asins[np.argsort(asins, kind="stable")]  # meta dumps are in asin order
    with gzip_out(meta_path, level=1) as out:
        for lo in range(0, n_meta, _CHUNK):
            n = min(_CHUNK, n_meta - lo)
            has_title = rng.random(n) >= 0.015
            words = rng.integers(0, [len(ADJECTIVES), len(NOUNS), len(NOUNS), len(BRANDS)], (n, 4))
            prices = np.round(rng.uniform(1.0, 80.0, n), 2)
            has_price = rng.random(n) < 0.85
            ranks = rng.integers(1, 2_000_000, n)
            image_ids = _np_codes(rng, n, 11, ALNUM_MIXED)
            n_also = rng.integers(0, 40, n)  # real related lists run to dozens of asins
            also = rng.integers(0, n_meta, (n, 40))
            lines = []
            for k in range(n):
                adj, noun, noun2, brand = words[k].tolist()
                meta: dict = {"asin": asins[lo + k]}
                if has_title[k]:
                    if category == "Books":
                        title = f"The {ADJECTIVES[adj]} {NOUNS[noun]} of {NOUNS[noun2]}"
                    else:
                        title = f"{BRANDS[brand]} {ADJECTIVES[adj]} {NOUNS[noun]}"
                    meta["title"] = title
                if has_price[k]:
                    meta["price"] = float(prices[k])
                meta["imUrl"] = f"{IMG_2014}/images/I/{image_ids[k]}._SY300_.jpg"
                meta["related"] = {"also_bought": asins[also[k, : n_also[k]]].tolist()}
                meta["salesRank"] = {label: int(ranks[k])}
                meta["categories"] = [[label]]
                if category != "Books":
                    meta["brand"] = BRANDS[brand]
                lines.append(repr(meta))
            out.write(("\n".join(lines) + "\n").encode("utf-8"))
    return reviews_path, meta_path
