"""The Amazon review releases of the sample: one writer, and per release (as
molorec.io.amazon reads them) what differs: the ids, the review record and its line, the
meta line, and how the meta file repeats an item."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from molorec.io.amazon import LAYOUTS
from molorec.sample.common import (
    DAY_S,
    DETAILS,
    Family,
    Item,
    also_bought,
    catalog,
    code,
    day,
    days,
    description,
    duplicate_reviews,
    image_url,
    insert_copies,
    rating,
    review_time,
    review_words,
    reviewer_name,
    simulate,
    thin_items,
    title_junk,
    truncate_one,
    unique,
    write_lines,
)


@dataclass
class Shop:
    """One domain's catalog and ids while its files are written."""

    items: list[Item]
    lines: list[list[int]]
    ids: list[str] = field(default_factory=list)  # the meta file's item ids
    variants: list[list[str]] = field(default_factory=list)  # 2023: asins per parent
    reviews: list[list[dict]] = field(default_factory=list)  # per item, as written


@dataclass(frozen=True)
class Release:
    name: str  # a molorec.io.amazon layout
    reviews: str  # file names under out_dir, {category} filled in
    meta: str
    first_day: int
    last_day: int
    simulate: Callable  # (rng, shop, n_users) -> per user the items in order
    item_ids: Callable  # (rng, shop) -> None: fills shop.ids (and shop.variants)
    user_id: Callable  # (rng) -> one user id
    review: Callable  # (rng, shop, user, item, day, name, rating, summary, text) -> dict
    later: Callable  # (review, days) -> the review repeated that many days later
    review_line: Callable  # (rng, review) -> str
    meta_line: Callable  # (rng, shop, i, title or None) -> str
    repeat_meta: Callable  # (rng, lines, originals, meta_name, shop, dup_items) -> notes
    names: bool = True  # reviews carry a reviewerName
    sorted_by_item: bool = True  # the 5-core files come grouped by item


def write_release(
    out_dir: Path,
    release: Release,
    category: str,
    families: list[Family],
    *,
    seed: int,
    n_users: int,
    malformed: bool,
    notes: list[str],
) -> list[Path]:
    """The reviews and meta files of one domain, with their defects noted in ``notes``."""
    layout = LAYOUTS[release.name]
    rng = random.Random(seed)
    shop = Shop(*catalog(families))
    seqs = release.simulate(rng, shop, n_users)
    release.item_ids(rng, shop)
    users = unique(lambda: release.user_id(rng), n_users)
    records = []
    for u, seq in enumerate(seqs):
        name = reviewer_name(rng) if release.names else None
        for item, d in zip(
            seq, days(rng, len(seq), release.first_day, release.last_day), strict=True
        ):
            stars = rating(rng)
            summary, text = review_words(rng, stars)
            records.append(release.review(rng, shop, users[u], item, d, name, stars, summary, text))
    if release.sorted_by_item:
        records.sort(key=lambda r: (r[layout.item], r[layout.time], r[layout.user]))

    review_name = release.reviews.format(category=category)
    dups = duplicate_reviews(rng, records, release.later)
    review_lines = [release.review_line(rng, r) for r in records]
    bad = truncate_one(rng, review_lines, malformed)

    by_item = {key: i for i, key in enumerate(shop.ids)}
    shop.reviews = [[] for _ in shop.items]
    for rec in records:
        shop.reviews[by_item[rec[layout.item]]].append(rec)
    meta_name = release.meta.format(category=category)
    reviewed = [bool(r) for r in shop.reviews]
    overrides, dup_items, title_notes = title_junk(rng, shop.items, shop.ids, meta_name, reviewed)
    meta_lines = []
    order = list(range(len(shop.items)))
    rng.shuffle(order)
    for i in order:
        meta_lines.append(release.meta_line(rng, shop, i, overrides.get(i, shop.items[i].title)))
    originals = [meta_lines[order.index(i)] for i in dup_items]
    repeat_notes = release.repeat_meta(rng, meta_lines, originals, meta_name, shop, dup_items)

    pairs = ", ".join(f"({c[layout.user]}, {c[layout.item]})" for c in dups)
    notes.append(f"`{review_name}`: duplicate (user, item) reviews with a later time: {pairs}")
    if bad:
        notes.append(f"`{review_name}`: line {bad} is truncated JSON")
    notes.extend(title_notes)
    notes.extend(repeat_notes)
    return [
        write_lines(out_dir / review_name, review_lines),
        write_lines(out_dir / meta_name, meta_lines),
    ]


def five_core(rng: random.Random, shop: Shop, n_users: int) -> list[list[int]]:
    return simulate(rng, shop.lines, len(shop.items), n_users, min_item_degree=5)


def amazon_user(rng: random.Random) -> str:
    return "A" + code(rng, rng.randint(12, 14))


def later_seconds(rec: dict, days: int) -> dict:
    ts = rec["unixReviewTime"] + days * DAY_S
    return {**rec, "unixReviewTime": ts, "reviewTime": review_time(ts)}


def exact_repeats(rng, meta_lines, originals, meta_name, shop, dup_items) -> list[str]:
    """Exact repeats somewhere after the original line."""
    insert_copies(rng, meta_lines, originals)
    repeated = ", ".join(shop.ids[i] for i in dup_items)
    return [f"`{meta_name}`: exact repeated lines for {repeated}"]


# --------------------------------------------------------------------------
# Amazon 2014: JSON reviews, Python-literal meta.

IMG_2014 = "http://ecx.images-amazon.com"
CODE_LINE = "__import__('os').system('echo pwned')"


def ids_2014(rng: random.Random, shop: Shop) -> None:
    shop.ids = unique(lambda: "B00" + code(rng, 7), len(shop.items))


def review_2014(rng, shop, user, item, d, name, stars, summary, text) -> dict:
    helpful_total = int(rng.expovariate(0.5))
    rec = {"reviewerID": user, "asin": shop.ids[item]}
    if name is not None:
        rec["reviewerName"] = name
    rec.update(
        helpful=[rng.randint(0, helpful_total), helpful_total],
        reviewText=text,
        overall=float(stars),
        summary=summary,
        unixReviewTime=d * DAY_S,
        reviewTime=review_time(d * DAY_S),
    )
    return rec


def meta_2014(rng: random.Random, shop: Shop, i: int, title: str | None) -> str:
    item = shop.items[i]
    meta: dict = {"asin": shop.ids[i]}
    if title is not None:
        meta["title"] = title
    if rng.random() < 0.9:
        meta["price"] = round(rng.uniform(2.5, 80.0), 2)
    meta["imUrl"] = image_url(rng, IMG_2014, "._SY300_.jpg")
    related = {"also_bought": also_bought(rng, shop.items, shop.lines, shop.ids, i)}
    if rng.random() < 0.3:
        related["bought_together"] = [shop.ids[rng.randrange(len(shop.items))]]
    meta["related"] = related
    meta["salesRank"] = {item.path[0]: rng.randint(100, 400_000)}
    meta["categories"] = [list(item.path)]
    meta["brand"] = item.brand
    meta["description"] = description(rng, item)
    return repr(meta)


def repeats_2014(rng, meta_lines, originals, meta_name, shop, dup_items) -> list[str]:
    """Exact repeats, and a code expression that ast.literal_eval must reject."""
    notes = exact_repeats(rng, meta_lines, originals, meta_name, shop, dup_items)
    code_at = rng.randrange(len(meta_lines) // 4, 3 * len(meta_lines) // 4)
    meta_lines.insert(code_at, CODE_LINE)
    notes.append(
        f"`{meta_name}`: line {code_at + 1} is the code expression "
        f"`{CODE_LINE}` (ast.literal_eval must reject it)"
    )
    return notes


# --------------------------------------------------------------------------
# Amazon 2018: JSON reviews with per-line key order, strict JSON meta.

IMG_2018 = "https://images-na.ssl-images-amazon.com"
SIZES = ("Small", "Medium", "Large", "X-Large")
COLORS = ("Black", "Blue", "Red", "Green", "Gray")


def ids_2018(rng: random.Random, shop: Shop) -> None:
    # A few old catalogue numbers are ISBN-like digits, as in the real dump.
    shop.ids = unique(
        lambda: code(rng, 10, string.digits) if rng.random() < 0.1 else "B00" + code(rng, 7),
        len(shop.items),
    )


def style_2018(rng: random.Random, item: Item) -> dict[str, str] | None:
    if rng.random() < 0.6:
        return None
    if item.path[0] == "Video Games":
        return {"Platform:": f" {item.path[1]}"}
    return {"Size:": f" {rng.choice(SIZES)}", "Color:": f" {rng.choice(COLORS)}"}


def review_2018(rng, shop, user, item, d, name, stars, summary, text) -> dict:
    rec: dict = {
        "overall": float(stars),
        "verified": rng.random() < 0.85,
        "reviewTime": review_time(d * DAY_S),
        "reviewerID": user,
        "asin": shop.ids[item],
    }
    style = style_2018(rng, shop.items[item])
    if style is not None:
        rec["style"] = style
    if name is not None:
        rec["reviewerName"] = name
    rec.update(reviewText=text, summary=summary, unixReviewTime=d * DAY_S)
    if rng.random() < 0.2:
        rec["vote"] = str(rng.randint(2, 60))
    if rng.random() < 0.03:
        rec["image"] = [image_url(rng, IMG_2018, "._SY88.jpg")]
    return rec


def line_2018(rng: random.Random, rec: dict) -> str:
    # The 2018 crawl has no stable key order; readers must not rely on one.
    fields = list(rec.items())
    rng.shuffle(fields)
    return json.dumps(dict(fields))


def meta_2018(rng: random.Random, shop: Shop, i: int, title: str | None) -> str:
    item = shop.items[i]
    also = also_bought(rng, shop.items, shop.lines, shop.ids, i)
    rank = rng.randint(100, 200_000)
    big = image_url(rng, IMG_2018, ".jpg")
    meta = {
        "category": list(item.path),
        "tech1": "",
        "description": [description(rng, item)],
        "fit": "",
        "title": title,
        "also_buy": also,
        "tech2": "",
        "brand": item.brand,
        "feature": rng.sample(DETAILS, 2),
        "rank": f"{rank:,} in {item.path[0]} (",
        "also_view": also[::-1],
        "main_cat": item.path[0],
        "similar_item": "",
        "date": "" if rng.random() < 0.6 else f"{rng.randint(2006, 2017)}",
        "price": f"${rng.uniform(4.0, 60.0):.2f}" if rng.random() < 0.8 else "",
        "asin": shop.ids[i],
        "imageURL": [big.replace(".jpg", "._SS40_.jpg")],
        "imageURLHighRes": [big],
        "details": {},
    }
    if meta["title"] is None:
        del meta["title"]
    return json.dumps(meta)


def repeats_2018(rng, meta_lines, originals, meta_name, shop, dup_items) -> list[str]:
    """The real 2018 meta has empty-title lines ahead of the complete one."""

    def empty_title(line: str) -> str:
        return json.dumps({**json.loads(line), "title": ""})

    insert_copies(rng, meta_lines, originals, empty_title, before=True)
    repeated = ", ".join(shop.ids[i] for i in dup_items)
    return [
        f'`{meta_name}`: {repeated} each also appear earlier in the file with an empty title ""'
    ]


# --------------------------------------------------------------------------
# Amazon 2023 (McAuley Lab): JSON lines, millisecond timestamps, parent_asin.

IMG_2023 = "https://m.media-amazon.com"


def not_five_core(rng: random.Random, shop: Shop, n_users: int) -> list[list[int]]:
    """Some light users and a few items with only 1-4 reviews."""
    seqs = simulate(rng, shop.lines, len(shop.items), n_users, light_share=0.12)
    thin_items(rng, seqs, len(shop.items), count=6)
    return seqs


def ids_2023(rng: random.Random, shop: Shop) -> None:
    shop.ids = unique(lambda: "B0" + code(rng, 8), len(shop.items))
    shop.variants = [
        [p] + ["B0" + code(rng, 8) for _ in range(rng.randint(1, 3))] if rng.random() < 0.3 else [p]
        for p in shop.ids
    ]


def review_2023(rng, shop, user, item, d, name, stars, summary, text) -> dict:
    images = []
    if rng.random() < 0.04:
        url = image_url(rng, IMG_2023, "._SL256_.jpg")
        images = [
            {
                "small_image_url": url,
                "medium_image_url": url.replace("256", "800"),
                "large_image_url": url.replace("._SL256_", ""),
                "attachment_type": "IMAGE",
            }
        ]
    return {
        "rating": float(stars),
        "title": summary,
        "text": text,
        "images": images,
        "asin": rng.choice(shop.variants[item]),
        "parent_asin": shop.ids[item],
        "user_id": user,
        "timestamp": d * DAY_S * 1000 + rng.randrange(DAY_S * 1000),
        "helpful_vote": int(rng.expovariate(0.7)),
        "verified_purchase": rng.random() < 0.9,
    }


def later_ms(rec: dict, days: int) -> dict:
    return {**rec, "timestamp": rec["timestamp"] + days * DAY_S * 1000}


def meta_2023(rng: random.Random, shop: Shop, i: int, title: str | None) -> str:
    item, ratings = shop.items[i], [r["rating"] for r in shop.reviews[i]]
    mean = sum(ratings) / len(ratings) if ratings else rng.uniform(3, 5)
    url = image_url(rng, IMG_2023, "._AC_US40_.jpg")
    meta = {"main_category": item.path[0], "title": title}
    if meta["title"] is None:
        del meta["title"]
    meta.update(
        average_rating=round(min(5.0, max(1.0, mean + rng.uniform(-0.3, 0.3))), 1),
        rating_number=len(ratings) * rng.randint(3, 40) + rng.randint(0, 50),
        features=rng.sample(DETAILS, 2),
        description=[description(rng, item)],
        price=round(rng.uniform(3.0, 90.0), 2) if rng.random() < 0.75 else None,
        images=[
            {
                "thumb": url,
                "large": url.replace("._AC_US40_", "._AC_"),
                "variant": "MAIN",
                "hi_res": None,
            }
        ],
        videos=[],
        store=item.brand,
        categories=list(item.path),
        details={
            "Manufacturer": item.brand,
            "Date First Available": f"{rng.randint(2012, 2022)}",
        },
        parent_asin=shop.ids[i],
        bought_together=None,
    )
    return json.dumps(meta)


RELEASES = {
    "amazon2014": Release(
        "amazon2014",
        reviews="amazon2014/reviews_{category}_5.json.gz",
        meta="amazon2014/meta_{category}.json.gz",
        first_day=day(2005, 1, 1),
        last_day=day(2014, 7, 23),
        simulate=five_core,
        item_ids=ids_2014,
        user_id=amazon_user,
        review=review_2014,
        later=later_seconds,
        review_line=lambda rng, rec: json.dumps(rec),
        meta_line=meta_2014,
        repeat_meta=repeats_2014,
    ),
    "amazon2018": Release(
        "amazon2018",
        reviews="amazon2018/{category}_5.json.gz",
        meta="amazon2018/meta_{category}.json.gz",
        first_day=day(2008, 1, 1),
        last_day=day(2018, 9, 30),
        simulate=five_core,
        item_ids=ids_2018,
        user_id=amazon_user,
        review=review_2018,
        later=later_seconds,
        review_line=line_2018,
        meta_line=meta_2018,
        repeat_meta=repeats_2018,
    ),
    "amazon2023": Release(
        "amazon2023",
        reviews="amazon2023/{category}.jsonl.gz",
        meta="amazon2023/meta_{category}.jsonl.gz",
        first_day=day(2015, 1, 1),
        last_day=day(2023, 9, 1),
        simulate=not_five_core,
        item_ids=ids_2023,
        user_id=lambda rng: "A" + code(rng, 27),
        review=review_2023,
        later=later_ms,
        review_line=lambda rng, rec: json.dumps(rec),
        meta_line=meta_2023,
        repeat_meta=exact_repeats,
        names=False,
        sorted_by_item=False,
    ),
}
