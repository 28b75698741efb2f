"""Properties of the example builder and of the instruction sets built from it."""

from __future__ import annotations

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
@given(sequences=sequences_st, role=st.sampled_from(["target", "general"]))
def test_example_properties(sequences, role):
    interactions, items = frames(sequences)
    s = settings_for(role)
    examples, summary = build_examples(interactions, items, s)
    titles = dict(items.rows())
    cold_items = _cold_set(examples, sequences, s, items)
    users = list(sequences)
    selection = {u for u, m in zip(users, selection_users(users, s), strict=True) if m}
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
        selection_user = row["user"] in selection
        held_out = row["split"] == "test" or (
            row["split"] == "val" and (row["cold"] or selection_user)
        )
        assert row["held_out"] == held_out
        assert row["selection"] == (row["split"] == "val" and selection_user)
        if not held_out:
            assert not (set(hist) | set(cands)) & cold_items
            assert hist == [i for i in before if i not in cold_items][-s.max_history :]
        else:
            assert hist == before[-s.max_history :]
        if row["split"] == "val":
            assert p == len(seq) - 2
        if row["split"] == "test":
            assert p == len(seq) - 1
        if row["split"] == "train":
            assert 1 <= p <= len(seq) - 3
        assert row["cold"] == (row["target"] in cold_items)
    if role == "general":
        assert set(examples["split"].to_list()) <= {"val"}
        assert not examples["cold"].any()
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
    assert cold_items(ids, settings_for(role="general")).sum() == 0
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
