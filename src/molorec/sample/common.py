"""What every writer of the sample shares: seeded codes and dates, review words, the
catalog as items and lines, the users' walks along the lines, and the injected defects.

Only ``random.Random(seed)`` is used, never ``hash()`` or set order, and gzip headers
carry neither a name nor a time, so a rerun is byte-identical.
"""

from __future__ import annotations

import datetime as dt
import gzip
import random
import string
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).parent
ALNUM = string.ascii_uppercase + string.digits
ALNUM_MIXED = string.ascii_letters + string.digits
DAY_S = 86_400
_EPOCH = dt.date(1970, 1, 1)

WORDS = yaml.safe_load((HERE / "words.yaml").read_text(encoding="utf-8"))
MOOD: dict[int, list[str]] = WORDS["moods"]
DETAILS: list[str] = WORDS["details"]
RATINGS = (1, 2, 3, 4, 5)
RATING_WEIGHTS = (5, 6, 10, 24, 55)  # Amazon ratings are skewed to 5 stars

# A line is an ordered series of items (a routine, a game franchise, a course sequence);
# a family, the lines under one category path. Users mostly walk one or two lines.
Line = tuple[str, list[str]]  # (brand, titles in series order)
Family = tuple[tuple[str, ...], list[Line]]  # (category path, lines)


def catalog_file(name: str) -> list[Family]:
    """The families of catalogs/<name>.yaml."""
    doc = yaml.safe_load((HERE / "catalogs" / f"{name}.yaml").read_text(encoding="utf-8"))
    return [
        (tuple(f["path"]), [(line["brand"], line["titles"]) for line in f["lines"]]) for f in doc
    ]


def day(year: int, month: int, dom: int) -> int:
    """Days since the Unix epoch; timestamps are built from whole days."""
    return (dt.date(year, month, dom) - _EPOCH).days


# --------------------------------------------------------------------------
# Output


@contextmanager
def gzip_out(path: Path, level: int = 9) -> Iterator[gzip.GzipFile]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # An empty filename and mtime=0 keep the header free of names and times,
    # which is what makes reruns byte-identical.
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level) as out,
    ):
        yield out


def write_lines(path: Path, lines: Sequence[str], *, gz: bool = True) -> Path:
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    if gz:
        with gzip_out(path) as out:
            out.write(data)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path


def review_time(unix_s: int) -> str:
    """Amazon's "MM D, YYYY" review date (month padded, day not), in UTC."""
    d = dt.datetime.fromtimestamp(unix_s, tz=dt.timezone.utc)
    return f"{d.month:02d} {d.day}, {d.year}"


def unique(draw: Callable[[], str], n: int) -> list[str]:
    """n distinct codes in draw order (the set is only a membership test)."""
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        code = draw()
        if code not in seen:
            seen.add(code)
            out.append(code)
    return out


def code(rng: random.Random, n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choices(alphabet, k=n))


# --------------------------------------------------------------------------
# Review text: short sentences whose mood follows the rating.


def rating(rng: random.Random) -> int:
    return rng.choices(RATINGS, weights=RATING_WEIGHTS)[0]


def review_words(rng: random.Random, rating: int) -> tuple[str, str]:
    """(summary, text) of about 60-120 characters."""
    summary = rng.choice(MOOD[rating])
    text = summary + "."
    for detail in rng.sample(DETAILS, 3):
        if len(text) >= 60:
            break
        text += " " + detail
    return summary, text


def reviewer_name(rng: random.Random) -> str | None:
    """A display name; None (key left out) for the ~2% of reviews without one."""
    u = rng.random()
    first, last = rng.choice(WORDS["first_names"]), rng.choice(WORDS["last_names"])
    if u < 0.02:
        return None
    if u < 0.12:
        return "Amazon Customer"
    if u < 0.45:
        return f"{first[0]}. {last}"
    if u < 0.55:
        return first
    return f"{first} {last}"


# --------------------------------------------------------------------------
# The catalog as items and lines


@dataclass(frozen=True)
class Item:
    title: str
    brand: str
    path: tuple[str, ...]
    line: int
    pos: int  # position in its line


def catalog(families: Sequence[Family]) -> tuple[list[Item], list[list[int]]]:
    """Flatten families into items plus each line as a list of item indices."""
    items: list[Item] = []
    lines: list[list[int]] = []
    for path, family_lines in families:
        for brand, titles in family_lines:
            line = len(lines)
            lines.append([])
            for pos, title in enumerate(titles):
                lines[line].append(len(items))
                items.append(Item(title, brand, path, line, pos))
    titles = [item.title for item in items]
    if len(set(titles)) != len(titles):
        raise ValueError("vocabulary titles must be distinct within a domain")
    return items, lines


# --------------------------------------------------------------------------
# User behaviour: walk one or two lines in order, plus ~20% popular extras.


def zipf_cum(rng: random.Random, n: int, exponent: float) -> list[float]:
    """Cumulative Zipf weights over a random ranking of n things."""
    ranks = list(range(n))
    rng.shuffle(ranks)
    weights = [1.0 / (r + 1) ** exponent for r in ranks]
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    return cum


def simulate(
    rng: random.Random,
    lines: list[list[int]],
    n_items: int,
    n_users: int,
    *,
    light_share: float = 0.0,
    min_item_degree: int = 0,
) -> list[list[int]]:
    """Per user the ordered list of distinct items they interacted with.

    Every user gets >= 5 items unless drawn as a light user (light_share);
    min_item_degree > 0 tops items up so the set is 5-core by construction.
    """
    item_ids, line_ids = range(n_items), range(len(lines))
    item_cum = zipf_cum(rng, n_items, 0.9)
    line_cum = zipf_cum(rng, len(lines), 0.6)
    seqs: list[list[int]] = []
    for _ in range(n_users):
        if rng.random() < light_share:
            n = rng.randint(1, 4)
        else:
            # 5 plus an exponential tail: mean around 8.5, capped.
            n = min(5 + int(rng.expovariate(1 / 4.0)), 24)
        n_line = max(n - sum(rng.random() < 0.2 for _ in range(n)), min(n, 3))
        seq: list[int] = []
        while len(seq) < n_line:
            line = lines[rng.choices(line_ids, cum_weights=line_cum)[0]]
            # Most users start a line at its beginning; some join midway.
            start = 0 if rng.random() < 0.75 else rng.randrange(len(line) - 1)
            for item in line[start:]:
                if len(seq) == n_line:
                    break
                if item not in seq:
                    seq.append(item)
        while len(seq) < n:
            item = rng.choices(item_ids, cum_weights=item_cum)[0]
            if item not in seq:
                seq.insert(rng.randint(0, len(seq)), item)
        seqs.append(seq)
    if min_item_degree:
        degree = [0] * n_items
        for seq in seqs:
            for item in seq:
                degree[item] += 1
        for item in range(n_items):
            need = min_item_degree - degree[item]
            if need > 0:
                lacking = [u for u, seq in enumerate(seqs) if item not in seq]
                for u in rng.sample(lacking, need):
                    seqs[u].insert(rng.randint(0, len(seqs[u])), item)
    return seqs


def thin_items(rng: random.Random, seqs: list[list[int]], n_items: int, count: int) -> None:
    """Leave `count` random items with only 1-4 users, as in a non-5-core dump."""
    for item in rng.sample(range(n_items), count):
        holders = [u for u, seq in enumerate(seqs) if item in seq and len(seq) > 1]
        for u in holders[rng.randint(1, 4) :]:
            seqs[u].remove(item)


def days(rng: random.Random, n: int, lo: int, hi: int) -> list[int]:
    """n strictly increasing days inside one user's activity window."""
    span = min(hi - lo, max(20 * n, rng.randint(90, 1200)))
    start = rng.randint(lo, hi - span)
    return [start + d for d in sorted(rng.sample(range(span), n))]


# --------------------------------------------------------------------------
# Injected defects, shared by the Amazon families.

PAGE_SCRIPT = "var aPageStart = (new Date()).getTime();"


def title_junk(
    rng: random.Random,
    items: list[Item],
    ids: list[str],
    meta_name: str,
    reviewed: Sequence[bool],
) -> tuple[dict[int, str | None], list[int], list[str]]:
    """Deface a few meta titles.

    Returns title overrides (None: drop the 'title' key), the items whose meta
    line gets duplicated, and README notes naming the affected item ids.
    """
    quoted = [i for i, item in enumerate(items) if "'" in item.title or "&" in item.title]
    entity = rng.sample(quoted, 2)
    # Items left without a usable title must have reviews, so the pipeline has
    # reviews to drop as no_title.
    untitled = rng.sample([i for i in range(len(items)) if reviewed[i] and i not in entity], 5)
    missing, html = untitled[:3], untitled[3:]
    rest = [i for i in range(len(items)) if i not in entity and i not in untitled]
    spaces, pipes, *dups = rng.sample(rest, 4)
    overrides: dict[int, str | None] = {i: None for i in missing}
    overrides[html[0]] = PAGE_SCRIPT
    overrides[html[1]] = f'<span class="a-size-large">{items[html[1]].title}</span>'
    for i in entity:
        overrides[i] = items[i].title.replace("&", "&amp;").replace("'", "&#39;")
    overrides[spaces] = items[spaces].title.replace(" ", "  ", 1)
    title = items[pipes].title
    overrides[pipes] = title.replace(", ", " || ", 1) if ", " in title else f"{title} || 2 Pack"

    def names(idx: list[int]) -> str:
        return ", ".join(ids[i] for i in idx)

    notes = [
        f"`{meta_name}`: no 'title' key for {names(missing)} (these items have "
        "reviews, which the pipeline should drop as no_title)",
        f"`{meta_name}`: HTML/script junk as title for {names(html)}",
        f"`{meta_name}`: HTML entities (&amp; / &#39;) in titles of {names(entity)}",
        f"`{meta_name}`: doubled internal whitespace in the title of {ids[spaces]}",
        f"`{meta_name}`: a literal `||` in the title of {ids[pipes]}",
    ]
    return overrides, dups, notes


def duplicate_reviews(
    rng: random.Random, records: list[dict], later: Callable[[dict, int], dict]
) -> list[dict]:
    """Repeat 2-3 reviews (same user and item, a later time) right after the
    original; returns the copies for the README."""
    copies = []
    # Inserting from the back keeps the earlier picked positions valid.
    for p in sorted(rng.sample(range(len(records)), rng.randint(2, 3)), reverse=True):
        copies.append(later(records[p], rng.randint(1, 30)))
        records.insert(p + 1, copies[-1])
    return copies


def insert_copies(
    rng: random.Random,
    lines: list[str],
    originals: list[str],
    copy: Callable[[str], str] | None = None,
    *,
    before: bool = False,
) -> None:
    """Insert a (possibly altered) copy of each original line at a random
    position after it, or before it."""
    for original in originals:
        pos = lines.index(original)  # the first occurrence is the original
        at = rng.randint(0, pos) if before else rng.randint(pos + 1, len(lines))
        lines.insert(at, copy(original) if copy else original)


def truncate_one(rng: random.Random, lines: list[str], enabled: bool) -> int | None:
    """Insert one half-written JSON line (only into files of >= 1000 lines)."""
    if not enabled or len(lines) < 1000:
        return None
    pos = rng.randrange(len(lines) // 4, 3 * len(lines) // 4)
    lines.insert(pos, lines[pos][: len(lines[pos]) // 2])
    return pos + 1


def also_bought(
    rng: random.Random,
    items: list[Item],
    lines: list[list[int]],
    ids: list[str],
    i: int,
) -> list[str]:
    """Next items of the same line first (the real co-purchase signal), then noise."""
    item = items[i]
    nxt = lines[item.line][item.pos + 1 : item.pos + 4]
    noise = rng.sample(range(len(items)), rng.randint(0, 3))
    return [ids[j] for j in dict.fromkeys([*nxt, *noise]) if j != i]


def description(rng: random.Random, item: Item) -> str:
    # Brand and category only: the title must not leak into items whose title is junk.
    return f"A {item.path[-1].lower()} product by {item.brand}. {rng.choice(DETAILS)}"


def image_url(rng: random.Random, host: str, suffix: str) -> str:
    return f"{host}/images/I/{code(rng, 11, ALNUM_MIXED)}{suffix}"
