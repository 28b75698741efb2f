"""Examples stage: leave-one-out examples with seeded candidates, and cold items.

For a user's time-ordered items i1..in: train examples predict i_t from i1..i_{t-1} for
t = 2..n-2, validation predicts i_{n-1}, test predicts i_n. Every random choice of an
example (its negatives, their order, the noise titles of its answer, whether a train
example is sampled) is seeded from (seed, domain, user, split, position) only, so adding
users or domains never changes another example.

Cold start: each item is cold with probability ``cold_item_fraction``, drawn from its own
seeded hash of the item id alone, so adding items never changes another item and an item
is cold in every domain that lists it. Cold items never appear in an example an adapter
trains on (history, target and candidates alike), in a general domain as in a target one:
so no row of the pooled general set shows a target domain's cold item, whichever domains a
run lists (the same dump as a general and a target domain; Amazon categories that share
asins). Val/test examples whose target is cold are flagged.

Held out: an example no adapter trains on. Test examples; validation examples with a cold
target; and the validation examples of the selection users, a seeded
``selection_fraction`` of users (drawn from the user id alone, so a user is a selection user
in every domain). The selection users' validation examples are the selection set, on which
the fusion learning rate is chosen.

Negatives of a held-out example (``held_out_negatives``): ``matched`` draws them from the
target's own temperature, so that no candidate stands out as the one title no adapter has
seen. A warm target gets warm negatives; a cold target gets cold items the user never
interacted with, and where too few are left, warm items fill the rest of the list: the
summary counts the cold examples by their number of warm negatives. ``any`` is the old
draw (any item the user never interacted with), kept for comparison only: a cold target is
then one of the very few never-trained titles in its list (the novelty shortcut).

The general pool (molorec.data.instructions.pool_instructions) writes the (user, item)
pairs its rows show. A target domain built against that file never holds out an example
whose (user, target) pair is among them: the general adapter was trained on it. Such an
example is left out, counted by split in the summary's ``skipped``. The target side adapts
to the pool, never the reverse, so adding a target domain never changes the general set.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from molorec.data.streams import Streams
from molorec.parallel import forked
from molorec.settings import ExampleSettings

SPLIT_ORDER = ("train", "val", "test")


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of the parts that is the same on every machine and Python run."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def example_rng(s: ExampleSettings, user: str, split: str, position: int) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(stable_hash(s.seed, s.domain, user, split, position))
    )


def example_keys(s: ExampleSettings, examples: list[tuple[str, str, int]]) -> np.ndarray:
    """stable_hash(s.seed, s.domain, user, split, position) of each (user, split, position):
    the seeds of example_rng, the text built once per example instead of joined from parts."""
    prefix = f"{s.seed}\x1f{s.domain}\x1f"
    blake = hashlib.blake2b
    digests = b"".join(
        blake(f"{prefix}{user}\x1f{split}\x1f{position}".encode(), digest_size=8).digest()
        for user, split, position in examples
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def unit_hash(*parts: object) -> float:
    """stable_hash as a number in [0, 1): a seeded draw that belongs to one key."""
    return stable_hash(*parts) / 2.0**64


def cold_items(items: list[str], s: ExampleSettings) -> np.ndarray:
    """Boolean mask: each item is cold with probability ``cold_item_fraction``, by its own
    seeded draw. The adapters and the baselines both learn from the other items only.

    The draw reads the item id and the seed, not the domain or its role: an item listed by
    a general and a target domain is cold in both, so the general pool never shows it."""
    if s.cold_item_fraction <= 0:
        return np.zeros(len(items), dtype=bool)
    return np.array(
        [unit_hash(s.seed, "cold", it) < s.cold_item_fraction for it in items], dtype=bool
    )


def selection_users(users: list[str], s: ExampleSettings) -> np.ndarray:
    """Boolean mask: the users whose validation examples form the selection set."""
    return np.array(
        [unit_hash(s.seed, "selection", u) < s.selection_fraction for u in users], dtype=bool
    )


def _train_positions(
    users: list[str], offsets: np.ndarray, warm: np.ndarray, s: ExampleSettings
) -> tuple[np.ndarray, np.ndarray]:
    """(user index, target position) of the sampled train examples, in user/position order.

    Candidates are positions 1..n-3 whose target is warm and whose history keeps at least
    one warm item; the ``domain_train_samples`` with the smallest per-example hash are taken
    (bottom-k sampling: seeded per example, so a new user displaces at most a few).
    """
    lengths = np.diff(offsets)
    n_pos = np.maximum(lengths - 3, 0)
    user_idx = np.repeat(np.arange(len(users)), n_pos)
    starts = np.repeat(offsets[:-1], n_pos)
    pos = np.arange(n_pos.sum()) - np.repeat(np.cumsum(n_pos) - n_pos, n_pos) + 1
    warm_before = _offsets(warm.astype(np.int64))  # warm_before[i]: warm items in codes[:i]
    ok = warm[starts + pos] & (warm_before[starts + pos] - warm_before[starts] > 0)
    user_idx, pos = user_idx[ok], pos[ok]
    if len(pos) > s.domain_train_samples:
        train = zip(user_idx.tolist(), pos.tolist(), strict=True)
        keys = example_keys(s, [(users[u], "train", p) for u, p in train])
        take = np.sort(np.argsort(keys, kind="stable")[: s.domain_train_samples])
        user_idx, pos = user_idx[take], pos[take]
    return user_idx, pos


@dataclass(frozen=True)
class _Catalog:
    """The items as the draws see them: codes 0..n-1, their title codes and temperature."""

    n: int
    titles: list[int]
    cold: list[bool]
    cold_codes: np.ndarray


def _negatives(
    rng: np.random.Generator,
    target: int,
    n_items: int,
    interacted: set[int],
    cold: list[bool] | None,
    title_code: list[int],
    need: int,
    taken: set[int] | None = None,
) -> list[int]:
    """``need`` distinct items drawn uniformly among those the user never interacted with
    (and, where ``cold`` is given, that are warm), never two sharing a title, nor a title of
    the target or of ``taken`` (title codes already in the list).

    Two items with the same title would make an exact title match ambiguous, so a
    candidate list never holds two of them.
    """
    chosen: list[int] = []
    if need <= 0:
        return chosen
    titles = {title_code[target], *(taken or ())}
    for _ in range(1000):
        for c in rng.integers(0, n_items, size=2 * (need - len(chosen)) + 8).tolist():
            if c in interacted or (cold is not None and cold[c]):
                continue
            title = title_code[c]
            if title in titles:
                continue
            titles.add(title)
            chosen.append(c)
            if len(chosen) == need:
                return chosen
    raise ValueError("not enough eligible negative items")


def _cold_negatives(
    rng: np.random.Generator,
    target: int,
    cold_codes: np.ndarray,
    interacted: set[int],
    title_code: list[int],
    need: int,
) -> list[int]:
    """Up to ``need`` distinct cold items the user never interacted with, never two sharing
    a title (nor the target's): the cold items in a seeded order, taken while eligible, so
    the draw is uniform and ends when they run out (fewer than ``need`` then)."""
    chosen: list[int] = []
    titles = {title_code[target]}
    order = rng.permutation(len(cold_codes))
    chunk = 2 * need + 8  # most lists fill from the first chunk; no full list conversion
    for lo in range(0, len(order), chunk):
        for c in cold_codes[order[lo : lo + chunk]].tolist():
            if c in interacted or title_code[c] in titles:
                continue
            titles.add(title_code[c])
            chosen.append(c)
            if len(chosen) == need:
                return chosen
    return chosen


def _draw_negatives(
    rng: np.random.Generator,
    target: int,
    trained_on: bool,
    s: ExampleSettings,
    items: _Catalog,
    interacted: set[int],
    need: int,
) -> list[int]:
    """The negatives of one example (module docstring): warm for a trained row and, under
    ``matched``, of the target's temperature for a held-out one, warm items filling a cold
    list where too few cold items are left; any temperature for a held-out one under
    ``any``."""
    if not trained_on and s.held_out_negatives == "any":
        return _negatives(rng, target, items.n, interacted, None, items.titles, need)
    if trained_on or not items.cold[target]:
        return _negatives(rng, target, items.n, interacted, items.cold, items.titles, need)
    chosen = _cold_negatives(rng, target, items.cold_codes, interacted, items.titles, need)
    taken = {items.titles[c] for c in chosen}
    fill = _negatives(
        rng, target, items.n, interacted, items.cold, items.titles, need - len(chosen), taken
    )
    return chosen + fill


@dataclass(frozen=True)
class _Domain:
    """What the draws of one domain read: the catalog, the users' item runs, the sampled
    train positions, the selection users and the pairs the general pool shows."""

    s: ExampleSettings
    item_ids: list[str]
    catalog: _Catalog
    cold: np.ndarray
    codes: np.ndarray
    offsets: np.ndarray
    users: list[str]
    train_pos: np.ndarray
    train_at: np.ndarray
    selection: list[bool]
    in_pool: set[tuple[str, str]]


@dataclass
class _Part:
    """The examples of a run of users, as flat columns (one entry per example; history,
    candidates and answer flattened with their lengths), and their counts."""

    user: list = field(default_factory=list)  # index into _Domain.users
    split: list = field(default_factory=list)  # index into SPLIT_ORDER
    position: list = field(default_factory=list)
    target: list = field(default_factory=list)
    cold: list = field(default_factory=list)
    held_out: list = field(default_factory=list)
    selection: list = field(default_factory=list)
    history: list = field(default_factory=list)
    history_len: list = field(default_factory=list)
    candidates: list = field(default_factory=list)
    candidates_len: list = field(default_factory=list)
    answer: list = field(default_factory=list)
    answer_len: list = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    # Cold held-out examples by how many warm items their list holds: (split, n) -> count.
    warm_in_cold: Counter = field(default_factory=Counter)

    def compact(self) -> _Part:
        """The columns as numpy arrays: what a worker process sends back."""
        for name in COLUMNS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        return self


COLUMNS = [f for f in _Part.__dataclass_fields__ if f not in ("counts", "warm_in_cold")]


def _examples_of(d: _Domain, lo: int, hi: int) -> _Part:
    """The examples of users lo..hi-1, in user then plan order."""
    s, catalog, cold = d.s, d.catalog, d.cold
    warm = ~cold
    need = s.n_candidates - 1
    out = _Part()
    plans = []
    for u in range(lo, hi):
        n = int(d.offsets[u + 1] - d.offsets[u])
        if n < 3:
            out.counts["users_too_short"] += 1
            continue
        plan = [("train", p) for p in d.train_pos[d.train_at[u] : d.train_at[u + 1]].tolist()]
        plan += [("val", n - 2), ("test", n - 1)] if s.role == "target" else [("val", n - 2)]
        plans.append((u, plan))
    # Each example's generator, as example_rng seeds it, for all of them at once.
    streams = Streams(example_keys(s, [(d.users[u], *ex) for u, plan in plans for ex in plan]))
    i = -1
    for u, plan in plans:
        user = d.users[u]
        seq = d.codes[d.offsets[u] : d.offsets[u + 1]]
        interacted = set(seq.tolist())
        for split, p in plan:
            i += 1
            target = int(seq[p])
            is_cold = bool(cold[target])
            held_out = split == "test" or (split == "val" and (is_cold or d.selection[u]))
            if held_out and (user, d.item_ids[target]) in d.in_pool:
                out.counts[f"skipped_{split}"] += 1
                continue
            trained_on = not held_out
            history = seq[:p][warm[seq[:p]]] if trained_on else seq[:p]
            history = history[-s.max_history :]
            rng = streams[i]
            try:
                negatives = _draw_negatives(rng, target, trained_on, s, catalog, interacted, need)
            except ValueError:
                raise ValueError(
                    f"domain {s.domain}: user {user} ({split} example at position {p}) has "
                    f"fewer than {need} eligible negative items among {catalog.n}; lower "
                    "data.n_candidates or add items"
                ) from None
            if held_out and is_cold:
                out.warm_in_cold[split, int(warm[negatives].sum())] += 1
            cands = np.array([target, *negatives])
            rng.shuffle(cands)
            if s.answer == "target_plus_random":
                # An index draw, then the items: the same draw as choosing from the list,
                # without converting the list to an array.
                noise = rng.choice(len(negatives), size=s.answer_size - 1, replace=False)
                answer = [target, *(negatives[i] for i in noise.tolist())]
            else:
                answer = [target]
            out.counts[f"{split}_cold"] += is_cold
            in_selection = split == "val" and d.selection[u]
            out.counts["selection"] += in_selection
            out.user.append(u)
            out.split.append(SPLIT_ORDER.index(split))
            out.position.append(p)
            out.target.append(target)
            out.cold.append(is_cold)
            out.held_out.append(held_out)
            out.selection.append(in_selection)
            out.history.extend(history.tolist())
            out.history_len.append(len(history))
            out.candidates.extend(cands.tolist())
            out.candidates_len.append(len(cands))
            out.answer.extend(answer)
            out.answer_len.append(len(answer))
    return out


# A domain with fewer interactions is drawn in one process: forking costs more.
PARALLEL_INTERACTIONS = 20_000


def _compact_examples(d: _Domain, lo: int, hi: int) -> _Part:
    return _examples_of(d, lo, hi).compact()


def _parts(d: _Domain, workers: int) -> list[_Part]:
    """The examples of every user, in ``workers`` processes over runs of users of about
    equal length (each example's draws are its own, so the split changes nothing)."""
    n_users = len(d.users)
    workers = workers if d.offsets[-1] >= PARALLEL_INTERACTIONS else 1
    cuts = np.searchsorted(d.offsets, np.linspace(0, d.offsets[-1], workers + 1)[1:-1])
    bounds = [0, *sorted(set(cuts.tolist()) - {0, n_users}), n_users]
    with forked(_compact_examples, d, workers) as pool:
        return pool.map(list(zip(bounds[:-1], bounds[1:], strict=True)))


def build_examples(
    interactions: pl.DataFrame,
    items: pl.DataFrame,
    s: ExampleSettings,
    pooled_pairs: pl.DataFrame | pl.LazyFrame | None = None,
    workers: int = 1,
) -> tuple[pl.DataFrame, dict]:
    """The examples of one domain and their summary. ``pooled_pairs`` (user, item): the
    pairs the pooled general set shows, for a target domain; a held-out example whose
    (user, target) is among them is left out (module docstring). ``workers``: processes
    drawing the examples (the same examples for any number)."""
    item_ids = items["item"].to_list()
    n_items = len(item_ids)
    code_of = {it: i for i, it in enumerate(item_ids)}
    cold = cold_items(item_ids, s)
    catalog = _Catalog(
        n=n_items,
        titles=items["title"].rank("dense").to_list(),
        cold=cold.tolist(),
        cold_codes=np.flatnonzero(cold),
    )

    # interactions.parquet is ordered by user, then time: one contiguous run per user.
    codes = np.fromiter((code_of[i] for i in interactions["item"]), dtype=np.int64)
    runs = interactions.group_by("user", maintain_order=True).agg(pl.len())
    users = runs["user"].to_list()
    offsets = _offsets(runs["len"].to_numpy())
    in_pool = _pairs_in_pool(interactions, pooled_pairs) if s.role == "target" else set()

    if s.role == "target":
        train_user, train_pos = _train_positions(users, offsets, ~cold[codes], s)
    else:  # general domains contribute their validation examples only, as the paper
        train_user, train_pos = np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    domain = _Domain(
        s,
        item_ids,
        catalog,
        cold,
        codes,
        offsets,
        users,
        train_pos,
        np.searchsorted(train_user, np.arange(len(users) + 1)),
        selection_users(users, s).tolist(),
        in_pool,
    )
    parts = _parts(domain, workers)
    col = {name: np.concatenate([getattr(p, name) for p in parts]) for name in COLUMNS}
    counts = sum((p.counts for p in parts), Counter())
    warm_in_cold = sum((p.warm_in_cold for p in parts), Counter())

    ids = pa.array(item_ids, type=pa.string())
    examples = pl.from_arrow(
        pa.table(
            {
                "user": pa.array(users, type=pa.string()).take(col["user"]),
                "split": pa.array(SPLIT_ORDER, type=pa.string()).take(col["split"]),
                "position": pa.array(col["position"], type=pa.int32()),
                "history": _id_lists(col["history"], col["history_len"], ids),
                "target": ids.take(col["target"]),
                "candidates": _id_lists(col["candidates"], col["candidates_len"], ids),
                "answer": _id_lists(col["answer"], col["answer_len"], ids),
                "cold": pa.array(col["cold"].astype(bool), type=pa.bool_()),
                "held_out": pa.array(col["held_out"].astype(bool), type=pa.bool_()),
                "selection": pa.array(col["selection"].astype(bool), type=pa.bool_()),
            }
        )
    )
    split_counts = examples["split"].value_counts()
    summary = {
        "domain": s.domain,
        "role": s.role,
        "users": len(users),
        "items": n_items,
        "cold_items": int(cold.sum()),
        "examples": {
            sp: int(split_counts.filter(pl.col("split") == sp)["count"].sum()) for sp in SPLIT_ORDER
        },
        "dropped": {"users_too_short": counts["users_too_short"]},
        # Held-out examples left out because the pooled general set shows their
        # (user, target) pair: the general adapter trained on it.
        "skipped": {
            f"{sp}_pair_in_general_pool": counts[f"skipped_{sp}"] for sp in ("val", "test")
        },
        "cold_examples": {"val": counts["val_cold"], "test": counts["test_cold"]},
        # The selection users' validation examples: the set the fusion learning rate is
        # chosen on, which no adapter trains on.
        "selection_examples": counts["selection"],
        # Under "matched", a cold list's warm negatives are the fillers where too few cold
        # items were left; under "any", every warm negative (the novelty shortcut's size).
        "held_out_negatives": s.held_out_negatives,
        "cold_examples_by_warm_negatives": {
            sp: {str(k): v for (x, k), v in sorted(warm_in_cold.items()) if x == sp}
            for sp in ("val", "test")
        },
    }
    return examples, summary


def _pairs_in_pool(
    interactions: pl.DataFrame, pooled_pairs: pl.DataFrame | pl.LazyFrame | None
) -> set[tuple[str, str]]:
    """The (user, item) pairs of a domain's last two interactions per user (the validation
    and test targets, the only ones held out) that the pooled general set shows."""
    if pooled_pairs is None:
        return set()
    last_two = (
        interactions.lazy()
        .filter(pl.int_range(pl.len()).over("user") >= pl.len().over("user") - 2)
        .select("user", "item")
    )
    found = last_two.join(pooled_pairs.lazy().select("user", "item"), on=["user", "item"])
    return set(found.collect().iter_rows())


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _id_lists(flat: np.ndarray, lengths: np.ndarray, ids: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(
        pa.array(_offsets(lengths), type=pa.int32()), ids.take(pa.array(flat, type=pa.int64()))
    )


def run(
    interactions_path,
    items_path,
    settings: ExampleSettings,
    out: dict,
    pooled_pairs_path=None,
    workers: int = 1,
) -> dict:
    """The rule's entry point: write examples.parquet and its summary. ``pooled_pairs_path``:
    the general pool's pairs file, for a target domain of a run that pools one; ``workers``:
    the job's processes."""
    from molorec.io.parquet import write_json, write_parquet

    pooled = pl.scan_parquet(pooled_pairs_path) if pooled_pairs_path else None
    examples, summary = build_examples(
        pl.read_parquet(interactions_path), pl.read_parquet(items_path), settings, pooled, workers
    )
    write_parquet(examples, out["examples"])
    write_json(summary, out["summary"])
    return summary
