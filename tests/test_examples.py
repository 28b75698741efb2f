"""Properties of the example builder and of the instruction sets built from it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molorec.data.examples import ExampleSettings, build_examples, selection_users
from molorec.data.instructions import DEFAULT_PROMPT, build_instructions

N_ITEMS = 60


def frames(sequences: dict[str, list[int]], n_items: int = N_ITEMS):
    rows = [
        (user, f"I{item:03d}", t)
        for user, seq in sorted(sequences.items())
        for t, item in enumerate(seq)
    ]
    interactions = pl.DataFrame(
        rows, schema={"user": pl.String, "item": pl.String, "ts": pl.Int64}, orient="row"
    )
    items = pl.DataFrame(
        {
            "item": [f"I{i:03d}" for i in range(n_items)],
            "title": [f"Title {i}" for i in range(n_items)],
        }
    )
    return interactions, items


sequences_st = st.dictionaries(
    keys=st.from_regex(r"U[0-9]{1,4}", fullmatch=True),
    values=st.lists(st.integers(0, N_ITEMS - 1), min_size=1, max_size=25, unique=True),
    min_size=1,
    max_size=15,
)


def settings_for(role="target", **kw):
    base = dict(
        seed=3,
        domain="beauty",
        role=role,
        n_candidates=20,
        answer_size=4,
        max_history=6,
        domain_train_samples=40,
        cold_item_fraction=0.2,
    )
    base.update(kw)
    return ExampleSettings(**base)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequences=sequences_st,
    role=st.sampled_from(["target", "general"]),
    rule=st.sampled_from(["matched", "any"]),
)
def test_example_properties(sequences, role, rule):
    interactions, items = frames(sequences)
    s = settings_for(role, held_out_negatives=rule)
    examples, summary = build_examples(interactions, items, s)
    titles = dict(items.rows())
    cold_items = _cold_set(examples, sequences, s, items)
    users = list(sequences)
    selection = {u for u, m in zip(users, selection_users(users, s), strict=True) if m}
    warm_in_cold = {"val": {}, "test": {}}
    for row in examples.iter_rows(named=True):
        seq = [f"I{i:03d}" for i in sequences[row["user"]]]
        p = row["position"]
        assert seq[p] == row["target"]
        cands = row["candidates"]
        assert len(cands) == s.n_candidates == len(set(cands))
        assert cands.count(row["target"]) == 1
        negatives = set(cands) - {row["target"]}
        assert not negatives & set(seq), "a negative the user interacted with"
        assert len({titles[c] for c in cands}) == len(cands)
        # History: items strictly before the target, oldest first, the most recent kept.
        hist = row["history"]
        assert len(hist) <= s.max_history
        before = seq[:p]
        assert _is_subsequence(hist, before)
        assert row["answer"][0] == row["target"] and set(row["answer"]) <= set(cands)
        assert len(row["answer"]) == s.answer_size
        # Which examples are held out is tested by what reaches an adapter and what is
        # evaluated (test_evaluated_examples_reach_no_adapter_and_every_other_does).
        assert row["selection"] == (row["split"] == "val" and row["user"] in selection)
        n_warm = len(negatives - cold_items)
        if not row["held_out"]:
            assert not (set(hist) | set(cands)) & cold_items
            assert hist == [i for i in before if i not in cold_items][-s.max_history :]
        else:
            assert hist == before[-s.max_history :]
            if rule == "matched" and not row["cold"]:
                assert n_warm == len(negatives), "a cold negative beside a warm target"
            if rule == "matched" and row["cold"]:
                # Cold negatives while any is left (titles are distinct here), warm after.
                left = len(cold_items - set(seq))
                assert n_warm == max(0, len(negatives) - left)
            if row["cold"]:
                by = warm_in_cold[row["split"]]
                by[str(n_warm)] = by.get(str(n_warm), 0) + 1
        if row["split"] == "val":
            assert p == len(seq) - 2
        if row["split"] == "test":
            assert p == len(seq) - 1
        if row["split"] == "train":
            assert 1 <= p <= len(seq) - 3
        assert row["cold"] == (row["target"] in cold_items)
    if role == "general":
        assert set(examples["split"].to_list()) <= {"val"}
    assert summary["cold_examples_by_warm_negatives"] == {
        sp: dict(sorted(by.items(), key=lambda kv: int(kv[0]))) for sp, by in warm_in_cold.items()
    }
    assert summary["held_out_negatives"] == rule
    counts = examples.group_by("split").len()
    assert sum(counts["len"]) == examples.height
    assert summary["dropped"]["users_too_short"] == sum(len(v) < 3 for v in sequences.values())
    assert examples.filter(pl.col("split") == "train").height <= s.domain_train_samples


def _is_subsequence(sub, seq):
    it = iter(seq)
    return all(x in it for x in sub)


def _cold_set(examples, sequences, s, items):
    from molorec.data.examples import cold_items

    ids = items["item"].to_list()
    return {i for i, c in zip(ids, cold_items(ids, s), strict=True) if c}


def test_cold_items_are_drawn_per_item_and_seeded():
    from molorec.data.examples import cold_items

    ids = [f"I{i}" for i in range(2000)]
    mask = cold_items(ids, settings_for(cold_item_fraction=0.1))
    assert abs(mask.sum() - 200) < 3 * (2000 * 0.1 * 0.9) ** 0.5  # binomial, within 3 sigma
    assert (mask == cold_items(ids, settings_for(cold_item_fraction=0.1))).all()
    assert not (mask == cold_items(ids, settings_for(cold_item_fraction=0.1, seed=4))).all()
    # The same items in every domain, general ones too: a dump listed twice, or categories
    # that share asins, never show a target domain's cold item in the general pool.
    general = settings_for(role="general", domain="cell_phones", cold_item_fraction=0.1)
    assert (cold_items(ids, general) == mask).all()
    # New items (a grown catalogue) never change whether an existing item is cold.
    grown = cold_items([*ids, *(f"J{i}" for i in range(500))], settings_for(cold_item_fraction=0.1))
    assert (grown[: len(ids)] == mask).all()


def test_selection_users_are_the_same_in_every_domain():
    users = [f"U{i}" for i in range(2000)]
    mask = selection_users(users, settings_for(selection_fraction=0.2))
    assert abs(mask.sum() - 400) < 3 * (2000 * 0.2 * 0.8) ** 0.5
    for other in (settings_for(domain="toys", role="general", selection_fraction=0.2),):
        assert (selection_users(users, other) == mask).all()
    assert not (selection_users(users, settings_for(seed=4, selection_fraction=0.2)) == mask).all()


def test_selection_examples_reach_no_adapter():
    """The same dump as a general and a target domain: no (user, target) of the target's
    selection set is in the general pool or the domain adapter's rows."""
    seqs = {f"U{u}": [(u * 3 + k * 7) % N_ITEMS for k in range(9)] for u in range(60)}
    inter, items = frames(seqs)
    target, summary = build_examples(inter, items, settings_for(selection_fraction=0.3))
    general, _ = build_examples(
        inter, items, settings_for("general", domain="beauty_general", selection_fraction=0.3)
    )
    selection = target.filter(pl.col("selection"))
    assert selection["held_out"].all() and set(selection["split"]) == {"val"}
    assert selection.height == summary["selection_examples"] > 0
    assert selection.filter(~pl.col("cold")).height > 0  # warm ones too, not only cold
    pairs = set(selection.select("user", "target").iter_rows())
    trained = pl.concat([target.filter(~pl.col("held_out")), general.filter(~pl.col("held_out"))])
    assert not pairs & set(trained.select("user", "target").iter_rows())


def test_deterministic_and_independent_of_other_users():
    rng_seqs = {f"U{u}": [(u * 7 + k * 13) % N_ITEMS for k in range(8)] for u in range(12)}
    inter, items = frames(rng_seqs)
    s = settings_for(domain_train_samples=10_000)
    a, _ = build_examples(inter, items, s)
    b, _ = build_examples(inter, items, s)
    assert a.equals(b)
    # Adding a user changes nobody else's examples (nothing is capped here).
    more = dict(rng_seqs, U99=[1, 2, 3, 4, 5, 6])
    c, _ = build_examples(*frames(more), s)
    assert c.filter(pl.col("user") != "U99").equals(a)
    # A different seed gives different candidates.
    d, _ = build_examples(inter, items, settings_for(domain_train_samples=10_000, seed=4))
    assert not d["candidates"].equals(a["candidates"])


def test_train_samples_are_capped_and_seeded():
    seqs = {f"U{u}": [(u + k * 5) % N_ITEMS for k in range(12)] for u in range(30)}
    inter, items = frames(seqs)
    s = settings_for(domain_train_samples=25, cold_item_fraction=0.0)
    ex, summary = build_examples(inter, items, s)
    train = ex.filter(pl.col("split") == "train")
    assert train.height == 25 == summary["examples"]["train"]
    assert train.sort("user", "position").equals(train)


def test_too_few_items_for_candidates_is_a_clear_error():
    inter, items = frames({"U1": list(range(10))}, n_items=12)
    with pytest.raises(ValueError, match=r"domain beauty: user U1 .*fewer than 19 eligible"):
        build_examples(inter, items, settings_for(cold_item_fraction=0.0))


def test_target_only_answer():
    inter, items = frames({"U1": [1, 2, 3, 4, 5]})
    ex, _ = build_examples(inter, items, settings_for(answer="target_only"))
    assert all(a == [t] for a, t in ex.select("answer", "target").rows())


def test_instructions_follow_the_paper_template():
    inter, items = frames({"U1": [1, 2, 3, 4, 5, 6]})
    ex, _ = build_examples(inter, items, settings_for(cold_item_fraction=0.0))
    data = {"answer_size": 4, "n_candidates": 20}
    ins = build_instructions(ex, items, "beauty", DEFAULT_PROMPT, data)
    assert ins.height == ex.height
    row = ins.filter(pl.col("split") == "test").row(0, named=True)
    system, user, assistant = row["messages"]
    assert [system["role"], user["role"], assistant["role"]] == ["system", "user", "assistant"]
    assert system["content"] == "You are a helpful recommendation assistant."
    assert user["content"].startswith(
        "Given the following purchase history of a user:"
        "[Title 1||Title 2||Title 3||Title 4||Title 5]. Please select the top 4 most likely"
    )
    assert "Candidates: [" in user["content"]
    assert user["content"].endswith(
        "The top 4 most likely products to be purchased by the user are:"
    )
    assert assistant["content"].split("||")[0] == "Title 6"
    assert len(assistant["content"].split("||")) == 4


def test_template_override_and_unknown_field():
    inter, items = frames({"U1": [1, 2, 3]})
    ex, _ = build_examples(inter, items, settings_for(cold_item_fraction=0.0))
    prompt = {"system": "S", "user": "H={history} C={candidates} {{literal}}"}
    ins = build_instructions(ex, items, "d", prompt, {"answer_size": 4, "n_candidates": 20})
    assert ins["messages"][0][1]["content"].startswith("H=Title 1 C=")
    assert ins["messages"][0][1]["content"].endswith("{literal}")
    with pytest.raises(ValueError, match=r"\{bogus\}"):
        build_instructions(
            ex,
            items,
            "d",
            {"system": "S", "user": "{bogus}"},
            {"answer_size": 4, "n_candidates": 20},
        )


def shown_titles(messages, titles) -> set[str]:
    """Those of ``titles`` a prompt and its answer show: an entry of the bracketed history
    or candidate list of the user turn (between ``[``, ``||`` and ``]``), or of the answer."""
    user, assistant = messages[1]["content"], messages[2]["content"]
    entries = set(assistant.split("||"))
    return {
        title
        for title in titles
        if title in entries
        or any(f"{a}{title}{b}" in user for a in ("[", "||") for b in ("||", "]"))
    }


def _pool(tmp_path, general: pl.DataFrame, items: pl.DataFrame) -> tuple[pl.DataFrame, Path]:
    """The general pool of one general domain's examples, as the workflow builds it."""
    from molorec.data.instructions import pool_instructions
    from molorec.io.parquet import write_parquet

    data = {"answer_size": 4, "n_candidates": 20}
    ex_path, ins_path = tmp_path / "general_examples.parquet", tmp_path / "general_ins.parquet"
    write_parquet(general, ex_path)
    write_parquet(build_instructions(general, items, "general", DEFAULT_PROMPT, data), ins_path)
    pooled, pairs = tmp_path / "pool.parquet", tmp_path / "pairs.parquet"
    pool_instructions([ins_path], pooled, [ex_path], pairs)
    return pl.read_parquet(pooled), pairs


def test_evaluated_examples_reach_no_adapter_and_every_other_does(tmp_path):
    """What ``held_out`` decides, seen from its readers: every test example is evaluated
    (molorec.evaluate.scenario_examples), and so is every selection example; none of them,
    nor a cold target, is in the domain adapter's rows (molorec.train.training_rows) or the
    general pool of the same dump, by key or by (user, target). Every other example is
    trained on (the paper: the domain's train and validation examples)."""
    from molorec.evaluate import scenario_examples
    from molorec.train import training_rows

    seqs = {f"U{u}": [(u * 3 + k * 7) % N_ITEMS for k in range(5 + u % 5)] for u in range(60)}
    inter, items = frames(seqs)
    s = settings_for(selection_fraction=0.3)
    target, _ = build_examples(inter, items, s)
    general_s = settings_for("general", domain="g", selection_fraction=0.3)
    general, _ = build_examples(inter, items, general_s)
    data = {"answer_size": 4, "n_candidates": 20}
    ins = build_instructions(target, items, "beauty", DEFAULT_PROMPT, data)
    pooled, _ = _pool(tmp_path, general, items)
    keys = ["user", "split", "position"]

    evaluated = pl.concat(
        [
            scenario_examples(target, ins, split, scenario).select(*keys, "target")
            for split in ("test", "val")
            for scenario in ("warm", "cold")
        ]
    )
    trained = training_rows(ins).select(*keys, "target")
    tests = target.filter(pl.col("split") == "test")
    assert (
        evaluated.filter(pl.col("split") == "test")
        .sort(keys)
        .equals(tests.select(*keys, "target").sort(keys))
    ), "a test example is not evaluated"
    users = target["user"].unique().to_list()
    chosen = {u for u, m in zip(users, selection_users(users, s), strict=True) if m}
    assert set(evaluated.filter(pl.col("split") == "val")["user"]) == chosen
    assert not set(evaluated.select(keys).rows()) & set(trained.select(keys).rows())
    pairs = set(evaluated.select("user", "target").rows())
    assert not pairs & set(trained.select("user", "target").rows())
    assert not pairs & set(pooled.select("user", "target").rows())
    cold_targets = target.filter(pl.col("cold"))
    assert cold_targets.height > 0
    assert not set(cold_targets.select(keys).rows()) & set(trained.select(keys).rows())
    # Every example neither evaluated nor with a cold target is one the adapter trains on.
    rest = target.join(evaluated, on=keys, how="anti").filter(~pl.col("cold"))
    assert rest.height > 0
    assert set(rest.select(keys).rows()) <= set(trained.select(keys).rows())


def test_matched_negatives_are_as_unfamiliar_as_the_target():
    """Held-out lists: a cold target among cold items (where enough are left), a warm one
    among warm items; trained rows warm only. Where cold items run short, warm ones fill
    the list, and examples.json counts them."""
    seqs = {f"U{u}": [(u * 7 + k * 13) % N_ITEMS for k in range(4 + u % 6)] for u in range(80)}
    inter, items = frames(seqs, n_items=200)
    # 200 items: about 120 cold (plenty for 19 negatives), then about 10 (too few).
    for fraction, too_few in ((0.6, False), (0.05, True)):
        s = settings_for(cold_item_fraction=fraction)
        ex, summary = build_examples(inter, items, s)
        cold = _cold_set(ex, seqs, s, items)
        warm_negatives = {"val": [], "test": []}
        for split, is_cold, held_out, target, cands in ex.select(
            "split", "cold", "held_out", "target", "candidates"
        ).rows():
            n_warm = sum(c not in cold for c in cands if c != target)
            if not is_cold:
                assert n_warm == s.n_candidates - 1, "a cold negative beside a warm target"
            elif held_out:
                warm_negatives[split].append(n_warm)
        fills = warm_negatives["val"] + warm_negatives["test"]
        assert fills
        assert all(n > 0 for n in fills) if too_few else all(n == 0 for n in fills)
        counted = {
            sp: {str(k): n.count(k) for k in sorted(set(n))} for sp, n in warm_negatives.items()
        }
        assert summary["cold_examples_by_warm_negatives"] == counted


def test_any_is_the_old_draw_and_touches_held_out_rows_only():
    """``any`` gives the test examples of the draw before ``matched`` existed, byte for byte
    (digests from that code: its test lists never depended on the cold items); the two
    rules differ on held-out rows only."""
    seqs = {f"U{u}": [(u * 11 + k * 7) % N_ITEMS for k in range(4 + u % 9)] for u in range(40)}
    inter, items = frames(seqs)
    columns = ["user", "position", "history", "candidates", "answer"]

    def digest(frame):
        return hashlib.sha256(json.dumps(frame.select(columns).rows()).encode()).hexdigest()

    old, _ = build_examples(inter, items, settings_for(held_out_negatives="any"))
    new, _ = build_examples(inter, items, settings_for(held_out_negatives="matched"))
    tests = old.filter(pl.col("split") == "test")
    assert tests.height == 40
    assert digest(tests) == "d1036738ba258276dabc02fa7ef3d22e2b0aae1de35b55db03d99fe8b0faf6c1"
    assert digest(new.filter(pl.col("split") == "test")) != digest(tests)
    assert old.filter(~pl.col("held_out")).equals(new.filter(~pl.col("held_out")))
    assert old.select("user", "split", "position", "held_out").equals(
        new.select("user", "split", "position", "held_out")
    )
    # Without cold items every row is the old one, whatever the rule.
    for rule in ("any", "matched"):
        s = settings_for(held_out_negatives=rule, cold_item_fraction=0.0)
        frame = build_examples(inter, items, s)[0].select(
            "user", "split", "position", "history", "candidates", "answer"
        )
        text = json.dumps(frame.rows()).encode()
        assert hashlib.sha256(text).hexdigest() == (
            "74114a64dd4c4bf5ada2cadaf01c3e6120776ac86c00367c48db071c094a9998"
        )


def test_held_out_pairs_the_general_pool_shows_are_left_out(tmp_path):
    """A general dump that shares users and items with the target and shows each user's
    target test item in the history of their general row: the target leaves those test
    examples out, counts them, and no kept held-out (user, target) nor any cold item of
    the target is among the titles a pooled row shows."""
    seqs = {f"U{u}": [(u * 7 + k * 13) % N_ITEMS for k in range(6)] for u in range(50)}
    # General: the target's last item second, so that a pooled history shows it.
    general_seqs = {u: [seq[0], seq[-1], *seq[1:4]] for u, seq in seqs.items()}
    inter, items = frames(seqs)
    general, _ = build_examples(*frames(general_seqs), settings_for("general", domain="g"))
    pooled, pairs = _pool(tmp_path, general, items)
    s = settings_for()
    alone, alone_summary = build_examples(inter, items, s)
    target, summary = build_examples(inter, items, s, pl.scan_parquet(pairs))

    titles = dict(items.rows())
    shown = {
        (user, title)
        for user, m in pooled.select("user", "messages").rows()
        for title in shown_titles(m, titles.values())
    }
    kept = target.filter(pl.col("held_out"))
    assert not {(u, titles[t]) for u, t in kept.select("user", "target").rows()} & shown
    cold = {titles[i] for i in _cold_set(target, seqs, s, items)}
    assert cold and not cold & {title for _, title in shown}
    leaked = alone.filter(pl.col("held_out")).filter(
        pl.Series(
            [
                (u, titles[i]) in shown
                for u, i in alone.filter(pl.col("held_out")).select("user", "target").rows()
            ]
        )
    )
    by_split = leaked.group_by("split").len()
    expected = {f"{sp}_pair_in_general_pool": 0 for sp in ("val", "test")}
    expected |= {f"{sp}_pair_in_general_pool": n for sp, n in by_split.rows()}
    assert expected["test_pair_in_general_pool"] > 0
    assert summary["skipped"] == expected
    assert alone_summary["skipped"] == {k: 0 for k in expected}
    # Nothing else changes: the kept examples are those built without the pool.
    assert target.equals(
        alone.join(
            leaked.select("user", "split"), on=["user", "split"], how="anti", maintain_order="left"
        )
    )


def test_examples_files_are_byte_identical_across_runs(tmp_path):
    from molorec.data.examples import run
    from molorec.io.parquet import write_parquet

    seqs = {f"U{u}": [(u * 7 + k * 13) % N_ITEMS for k in range(4 + u % 6)] for u in range(40)}
    inter, items = frames(seqs)
    write_parquet(inter, tmp_path / "interactions.parquet")
    write_parquet(items, tmp_path / "items.parquet")
    pairs = pl.DataFrame({"user": ["U3", "U5"], "item": ["I000", "I013"]})
    write_parquet(pairs, tmp_path / "pairs.parquet")
    files = []
    for name in ("a", "b"):
        out = {"examples": tmp_path / name / "ex.parquet", "summary": tmp_path / name / "s.json"}
        run(
            tmp_path / "interactions.parquet",
            tmp_path / "items.parquet",
            settings_for(),
            out,
            tmp_path / "pairs.parquet",
        )
        files.append([out["examples"].read_bytes(), out["summary"].read_bytes()])
    assert files[0] == files[1]


@pytest.mark.parametrize("role", ["target", "general"])
def test_examples_drawn_in_forked_workers_equal_those_of_one_process(tmp_path, monkeypatch, role):
    """Users split over 3 forked workers (each child records its pid): the same examples,
    in the same order, and the same summary as one process."""
    import os

    from molorec.data import examples as ex

    seqs = {f"U{u:02d}": [(u * 7 + k * 13) % N_ITEMS for k in range(2 + u % 9)] for u in range(90)}
    inter, items = frames(seqs)
    s = settings_for(role, domain_train_samples=50)
    one, one_summary = build_examples(inter, items, s, workers=1)

    pids = tmp_path / "pids"
    compact = ex._compact_examples

    def recorded(d, lo, hi):
        with pids.open("a") as fh:
            fh.write(f"{os.getpid()}\n")
        return compact(d, lo, hi)

    monkeypatch.setattr(ex, "PARALLEL_INTERACTIONS", 0)
    monkeypatch.setattr(ex, "_compact_examples", recorded)
    three, three_summary = build_examples(inter, items, s, workers=3)
    children = set(pids.read_text().split())
    assert len(children) >= 2 and str(os.getpid()) not in children
    assert three.equals(one)
    assert three_summary == one_summary


def test_batched_streams_are_numpy_s_own_seeded_generators():
    """Streams re-seeds one generator per key: each must draw what
    np.random.Generator(np.random.PCG64(key)) draws, for keys of every size, and
    example_keys must give stable_hash's keys."""
    import numpy as np

    from molorec.data.examples import example_keys, stable_hash
    from molorec.data.streams import Streams

    rng = np.random.default_rng(0)
    keys = np.concatenate(
        [
            rng.integers(0, 2**63, size=300, dtype=np.uint64) * np.uint64(2) + np.uint64(1),
            np.array([0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1], dtype=np.uint64),
        ]
    )
    streams = Streams(keys)
    for i in [*range(len(keys)), 7, 3]:  # out of order: nothing carries over
        ours = streams[i]
        theirs = np.random.Generator(np.random.PCG64(int(keys[i])))
        assert ours.integers(0, 1000, size=5).tolist() == theirs.integers(0, 1000, size=5).tolist()
        assert (
            ours.choice(29, size=4, replace=False).tolist()
            == theirs.choice(29, size=4, replace=False).tolist()
        )
        a, b = np.arange(30), np.arange(30)
        ours.shuffle(a)
        theirs.shuffle(b)
        assert a.tolist() == b.tolist()
    s = settings_for()
    examples = [("U1", "train", 3), ("Ü\u00e9 x", "val", 12), ("", "test", 0)]
    assert example_keys(s, examples).tolist() == [
        stable_hash(s.seed, s.domain, *ex) for ex in examples
    ]
