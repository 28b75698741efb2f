"""Answer parsing, the rank backend against brute force, and metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch
from chat_data import TITLES, conversation

from molorec.metrics import paired_bootstrap, per_example, summarise, target_rank
from molorec.model import load_base
from molorec.predict import (
    candidate_ids,
    parse_answer,
    prompt_ids,
    rank_batch,
    rank_brute_force,
    rank_candidates,
)

IDS = [f"I{i}" for i in range(len(TITLES))]


@pytest.mark.parametrize(
    ("text", "ranking", "invalid", "duplicate"),
    [
        ("Halo 3: ODST", ["I1"], 0, 0),  # no separator
        ("  Halo 3: ODST ||LEGO City Fire Station  ", ["I1", "I2"], 0, 0),  # extra spaces
        # A hallucinated title and repeats keep their slots (None): raw positions.
        ("Halo 3: ODST||Halo 4||数据结构（上）", ["I1", None, "I3"], 1, 0),
        ("Halo 3: ODST||Halo 3: ODST||Halo 3: ODST", ["I1", None, None], 0, 2),
        ("", [], 0, 0),  # empty output
        (None, [], 0, 0),
        ("||Burt's Bees Lip Balm|||Halo 3: ODST||", ["I5", "I1"], 0, 0),  # stray pipes
        ("halo 3: odst", [None], 1, 0),  # exact matching is case-sensitive
    ],
)
def test_parse_answer(text, ranking, invalid, duplicate):
    parsed = parse_answer(text, TITLES, IDS)
    assert (parsed.ranking, parsed.n_invalid, parsed.n_duplicate) == (ranking, invalid, duplicate)


def test_parse_answer_with_titles_holding_pipes_and_normalised_matching():
    titles = ["Red|Blue Nail Polish", "Tom & Jerry", "A  B"]
    ids = ["x", "y", "z"]
    assert parse_answer("Red|Blue Nail Polish||Tom & Jerry", titles, ids).ranking == ["x", "y"]
    assert parse_answer("tom &amp; jerry||a b", titles, ids).ranking == [None, None]
    assert parse_answer("tom &amp; jerry||a b", titles, ids, normalised=True).ranking == ["y", "z"]


def test_the_target_ranks_at_its_raw_position_in_the_answer():
    """The issue's two answers: a hallucinated entry before the target, and three repeats of
    another title. Dropping them would rank Serum A first and second; the original scores
    the raw position of the split answer: second and fourth."""
    from molorec.evaluate import _parsed_predictions, metrics_of

    titles = {"s": "Serum A", "t": "Toner B", "c": "Cream C"}
    texts = [
        "Hallucinated X||Serum A||Toner B",
        "Toner B||Toner B||Toner B||Serum A",
        "Serum A||Made Up Y",
        "",
    ]
    rows = pl.DataFrame({"user": ["u1", "u2", "u3", "u4"], "target": ["s"] * 4})
    rows = rows.with_columns(candidates=pl.lit(["c", "s", "t"]))
    preds = _parsed_predictions(rows, texts, titles, normalised=False)
    rankings = preds["ranking"].to_list()
    assert rankings == [[None, "s", "t"], ["t", None, None, "s"], ["s", None], []]
    assert [target_rank(r, "s") for r in rankings] == [2, 4, 1, None]
    m = metrics_of(preds, seed=0)
    assert (m["HR@1"], m["HR@3"], m["HR@5"]) == (0.25, 0.5, 0.75)
    assert m["NDCG@3"] == pytest.approx((1 / math.log2(3) + 1) / 4)
    # Per variant: the share of answers with an invalid entry, with a duplicate, empty.
    assert (m["invalid_answer_share"], m["duplicate_answer_share"]) == (0.5, 0.25)
    assert m["empty_answer_share"] == 0.25
    assert m["valid_ratio"] == pytest.approx(7 / 9)  # 9 entries, two not candidates


def perturbed_tiny(tiny):
    """The tiny model with its layers perturbed: a less uniform model than the fresh one."""
    model, _ = load_base(tiny)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.model.layers.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def test_mean_rank_score_lifts_a_long_title_over_a_short_one(tiny, tokenizer):
    """evaluate.rank_score mean: a title's score is its tokens' mean log-likelihood. Summed,
    every extra token lowers a title's score, so a long title with likelier tokens ranks
    below a short one; averaged, it ranks above."""
    model = perturbed_tiny(tiny)
    prompt = prompt_ids(tokenizer, conversation(0, "unused"))
    titles = [*TITLES, "LEGO City Fire Station with Fire Truck, Helicopter and Three Minifigures"]
    cands = candidate_ids(tokenizer, titles)
    sums = rank_brute_force(model, prompt, cands)  # the reference: a full forward each
    means = sums / torch.tensor([len(c) for c in cands])
    # A short title S and a longer one L: S ahead by the sum, L ahead per token.
    pairs = [
        (s, long)
        for s in range(len(cands))
        for long in range(len(cands))
        if len(cands[long]) > len(cands[s]) and sums[long] < sums[s] and means[long] > means[s]
    ]
    assert pairs
    short, long = pairs[0]
    by_sum = rank_candidates(model, prompt, cands, "sum")
    by_mean = rank_candidates(model, prompt, cands, "mean")
    assert by_sum[short] > by_sum[long] and by_mean[long] > by_mean[short]
    torch.testing.assert_close(by_mean, means, rtol=0, atol=1e-4)
    torch.testing.assert_close(rank_candidates(model, prompt, cands), by_sum)  # sum: default
    with pytest.raises(ValueError, match="rank_score"):
        rank_candidates(model, prompt, cands, "max")


def test_rank_backend_equals_brute_force_scoring(tiny, tokenizer):
    model, _ = load_base(tiny)
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # a less uniform model than the fresh one
        for p in model.model.layers.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    prompt = prompt_ids(tokenizer, conversation(0, "unused"))
    cands = candidate_ids(tokenizer, TITLES)
    fast = rank_candidates(model, prompt, cands)
    slow = rank_brute_force(model, prompt, cands)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-4)
    # No two candidates tie, so the order is defined, and it is the brute-force order.
    assert len(set(fast.tolist())) == len(TITLES)
    assert torch.equal(torch.argsort(fast, descending=True), torch.argsort(slow, descending=True))


def test_a_batch_of_examples_ranks_as_each_on_its_own(tiny, tokenizer):
    """rank_batch: prompts of different lengths, candidate lists of different sizes and
    lengths, padded into one batch; each example's scores are the brute-force ones (a full
    forward per candidate, no padding): padding is never seen, by the prompts or the
    candidates."""
    model = perturbed_tiny(tiny)
    prompts = [prompt_ids(tokenizer, conversation(i, "unused")) for i in (0, 3, 1)]
    prompts[1] = prompts[1] + prompts[1][-9:]  # a longer prompt: the others are padded
    assert len({len(p) for p in prompts}) > 1
    lists = [TITLES, TITLES[2:], [TITLES[4], "LEGO City Fire Station with Fire Truck"]]
    cands = [candidate_ids(tokenizer, titles) for titles in lists]
    batched = rank_batch(model, prompts, cands)
    for prompt, example_cands, scores in zip(prompts, cands, batched, strict=True):
        torch.testing.assert_close(
            scores, rank_brute_force(model, prompt, example_cands), rtol=0, atol=1e-4
        )
    means = rank_batch(model, prompts, cands, "mean")
    for scores, mean, example_cands in zip(batched, means, cands, strict=True):
        torch.testing.assert_close(mean, scores / torch.tensor([len(c) for c in example_cands]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_log_normaliser_is_torchs_logsumexp_whatever_the_chunks(dtype, monkeypatch):
    """Chunks of 2 rows over 15 (a short last chunk), and one chunk of them all."""
    import molorec.predict as predict

    logits = (torch.randn(3, 5, 1000, generator=torch.Generator().manual_seed(0)) * 4).to(dtype)
    expected = logits.float().logsumexp(-1)
    for chunk in (2000, 10**6):
        monkeypatch.setattr(predict, "LOGSUMEXP_CHUNK", chunk)
        got = predict.log_normaliser(logits)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_rank_in_bf16_follows_fp32(tiny, tokenizer):
    """model.precision bf16 (weights and cache in bf16): the scores stay float32 and close
    to the float32 model's; bf16 keeps about 3 significant digits of each logit."""
    model, _ = load_base(tiny)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.model.layers.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    prompt = prompt_ids(tokenizer, conversation(0, "unused"))
    cands = candidate_ids(tokenizer, TITLES)
    fp32 = rank_candidates(model.eval(), prompt, cands)
    bf16 = rank_candidates(model.to(torch.bfloat16), prompt, cands)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, rtol=0.02, atol=0.5)
    # In a batch (padded, larger matrix products), bf16 rounds otherwise, as closely.
    longer = prompt + prompt[-7:]
    batched = rank_batch(model, [longer, prompt], [cands[1:], cands])[1]
    torch.testing.assert_close(batched, fp32, rtol=0.02, atol=0.5)


def test_metrics_hand_computed():
    assert target_rank(["a", "b", "c"], "b") == 2 and target_rank(["a"], "z") is None
    values = per_example([1, 2, 4, None])
    assert values["HR@1"].tolist() == [1, 0, 0, 0]
    assert values["HR@3"].tolist() == [1, 1, 0, 0]
    assert values["HR@5"].tolist() == [1, 1, 1, 0]
    assert values["NDCG@3"].tolist() == pytest.approx([1, 1 / math.log2(3), 0, 0])
    assert values["NDCG@5"].tolist() == pytest.approx([1, 1 / math.log2(3), 1 / math.log2(5), 0])
    assert values["MRR"].tolist() == pytest.approx([1, 0.5, 0.25, 0])
    summary = summarise([1, 2, 4, None], valid_ratio=0.75, seed=1)
    assert summary["HR@3"] == 0.5 and summary["n"] == 4 and summary["valid_ratio"] == 0.75
    lo, hi = summary["HR@3_ci95"]
    assert 0 <= lo <= 0.5 <= hi <= 1


def test_paired_bootstrap():
    a = np.array([1.0] * 80 + [0.0] * 20)
    b = np.array([0.0] * 80 + [0.0] * 20)
    clear = paired_bootstrap(a, b, seed=0)
    assert clear["diff"] == pytest.approx(0.8) and clear["p"] < 0.01
    same = paired_bootstrap(a, a.copy(), seed=0)
    assert same["diff"] == 0 and same["p"] == 1.0


# --- baselines on a toy sequence where the right answer is known -------------------------


def toy_sequences():
    # A strict cycle a -> b -> c -> d -> a; "d" is the most popular item overall.
    cycle = ["a", "b", "c", "d"]
    seqs = [[cycle[(s + t) % 4] for t in range(8)] for s in range(40)]
    seqs += [["d", "x"], ["d", "y"], ["d", "z"]] * 5
    return seqs


def test_baselines_on_a_known_sequence():
    from molorec.baselines import BASELINES, TrainingData, rank

    seqs = TrainingData(toy_sequences())
    cands = ["d", "c", "b", "a"]
    pop = BASELINES["pop"](seed=0).fit(seqs)
    assert rank(pop, ["a"], cands)[0] == "d"
    markov = BASELINES["markov"](seed=0).fit(seqs)
    assert rank(markov, ["a", "b"], cands)[0] == "c"
    assert rank(markov, ["unknown"], cands)[0] == "d"  # falls back to popularity
    sasrec = BASELINES["sasrec"](seed=0, epochs=40).fit(seqs)
    assert rank(sasrec, ["c", "d", "a"], cands)[0] == "b"
    assert rank(sasrec, ["b", "c"], cands)[0] == "d"
    rnd = BASELINES["random"](seed=0).fit(seqs)
    assert sorted(rank(rnd, ["a"], cands, key="u1")) == sorted(cands)
    assert rank(rnd, ["a"], cands, key="u1") == rank(rnd, ["a"], cands, key="u1")


def test_no_cold_item_reaches_a_baseline():
    """Baselines learn from the items the adapters may train on: no cold item at all."""
    from molorec.data.examples import ExampleSettings, build_examples, cold_items
    from molorec.evaluate import training_sequences

    sequences = {f"U{u}": [(u * 5 + k * 3) % 40 for k in range(8)] for u in range(30)}
    interactions = pl.DataFrame(
        [(u, f"I{i:02d}") for u, seq in sequences.items() for i in seq],
        schema=["user", "item"],
        orient="row",
    )
    items = pl.DataFrame({"item": [f"I{i:02d}" for i in range(40)]}).with_columns(
        title=pl.concat_str(pl.lit("title "), "item")
    )
    s = ExampleSettings(
        seed=1,
        domain="d",
        role="target",
        n_candidates=5,
        answer_size=2,
        cold_item_fraction=0.3,
        selection_fraction=0.3,
    )
    examples, _ = build_examples(interactions, items, s)
    ids = items["item"].to_list()
    cold = {i for i, c in zip(ids, cold_items(ids, s), strict=True) if c}
    # Some cold items are never a target: a rule that removed cold targets only missed them.
    assert cold - set(examples.filter(pl.col("cold"))["target"])
    seen = {i for seq in training_sequences(examples, interactions, cold) for i in seq}
    assert seen and not seen & cold
    # Nor a held-out target: a selection user's validation target, or any test target.
    for user, position in (
        examples.filter(pl.col("held_out")).select("user", "position").iter_rows()
    ):
        firsts = training_sequences(
            examples.filter(pl.col("user") == user),
            interactions.filter(pl.col("user") == user),
            cold,
        )
        assert all(len(seq) <= position for seq in firsts)


# --- evaluation outputs and selection ----------------------------------------------------


def test_evaluation_outputs_and_selection_without_test_labels(tmp_path):
    from molorec.baselines import TrainingData
    from molorec.evaluate import metrics_of, predict_baseline, select_lr, write_evaluation

    rows = pl.DataFrame(
        {
            "user": ["u1", "u2", "u3"],
            "position": [3, 3, 3],
            "target": ["c", "d", "a"],
            "history": [["a", "b"], ["b", "c"], ["c", "d"]],
            "candidates": [["d", "c", "b", "a"]] * 3,
        }
    )
    preds = predict_baseline("markov", rows, TrainingData(toy_sequences()), seed=0)
    assert preds["ranking"].to_list()[0][0] == "c"
    metrics = write_evaluation(preds, tmp_path / "markov", seed=0)
    assert metrics["HR@1"] == 1.0 and metrics["n"] == 3 and metrics["valid_ratio"] == 1.0
    assert (tmp_path / "markov/predictions.parquet").is_file()
    # Nothing generated: no answer shares (test_the_target_ranks_at_its_raw_position...).
    assert metrics["invalid_answer_share"] is None and metrics["duplicate_answer_share"] is None
    assert metrics_of(preds, 0)["HR@1"] == metrics["HR@1"]

    val = {
        "0.5": {"HR@1": 0.2, "HR@3": 0.4, "NDCG@3": 0.3},
        "2": {"HR@1": 0.1, "HR@3": 0.2, "NDCG@3": 0.1},
    }
    test = {
        "0.5": {"HR@1": 0.1, "HR@3": 0.2, "NDCG@3": 0.1},
        "2": {"HR@1": 0.3, "HR@3": 0.5, "NDCG@3": 0.4},
    }
    val = {lr: m | {"n": 10} for lr, m in val.items()}
    chosen = select_lr(val, test)
    assert chosen["selected_lr"] == "0.5" and chosen["optimistic_lr"] == "2"
    assert chosen["optimism_gap"] == pytest.approx(1.2 - 0.4)
    # No selection example at all: nothing to choose on, and the choice says so.
    empty = {lr: {k: math.nan for k in m} | {"n": 0} for lr, m in val.items()}
    chosen = select_lr(empty, test)
    assert chosen["selected_lr"] == "0.5" and "no selection examples" in chosen["criterion"]


def test_vllm_backend_says_clearly_when_vllm_is_missing():
    import importlib.util

    from molorec.evaluate import predict_vllm

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here: the GPU path is exercised on GPU machines")
    rows = pl.DataFrame({"user": ["u"], "target": ["a"], "messages": [[]], "candidates": [["a"]]})
    with pytest.raises(RuntimeError, match="vllm is not installed.*generate or rank"):
        predict_vllm("base", None, rows, {"a": "A"}, 8)


def test_vllm_lora_rank_follows_the_adapter(tmp_path):
    """A fused adapter has rank r_general + r_domain: the engine's limit must hold it."""
    import json

    from molorec.evaluate import vllm_lora_rank

    for r, limit in [(16, 16), (32, 32), (48, 64), (96, 128)]:
        (tmp_path / "adapter_config.json").write_text(json.dumps({"r": r}))
        assert vllm_lora_rank(str(tmp_path)) == limit
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 1024}))
    with pytest.raises(ValueError, match="exceeds vLLM's largest"):
        vllm_lora_rank(str(tmp_path))


# --- the examples evaluated, the adaptation overlap and the candidate order check --------


def toy_domain(n_users: int = 40):
    """A target domain's examples, catalog and instructions, as the stages build them."""
    from molorec.data.examples import ExampleSettings, build_examples
    from molorec.data.instructions import DEFAULT_PROMPT, build_instructions

    interactions = pl.DataFrame(
        [(f"U{u:02d}", f"I{(u * 7 + k * 3) % 60:02d}") for u in range(n_users) for k in range(7)],
        schema=["user", "item"],
        orient="row",
    )
    # Titles of 3 lengths: the rank_score options order them differently.
    items = pl.DataFrame(
        {
            "item": [f"I{i:02d}" for i in range(60)],
            "title": [f"Title of I{i:02d}" + " with more words" * (i % 3) for i in range(60)],
        }
    )
    s = ExampleSettings(
        seed=3,
        domain="d",
        role="target",
        n_candidates=6,
        answer_size=2,
        cold_item_fraction=0.2,
        selection_fraction=0.3,
    )
    examples, _ = build_examples(interactions, items, s)
    prompt = {"prompt": DEFAULT_PROMPT, "answer_size": 2, "n_candidates": 6}
    instructions = build_instructions(examples, items, "d", DEFAULT_PROMPT, prompt)
    return examples, items, instructions, prompt


def eval_settings(**changes) -> dict:
    s = {
        "max_examples": 0,
        "max_selection_examples": 0,
        "exclude_adapted": False,
        "adaptation": {
            "n_prompts": {"warm": 3, "cold": 2},
            "adapt_on": "test",
            "prompt_choice": "target_scenario",
        },
    }
    return s | changes


@pytest.mark.parametrize("choice", ["target_scenario", "first_n"])
def test_evaluation_marks_and_can_exclude_what_fusion_adapted_on(choice):
    """The adapted examples are fusion's own choice (the prompts adaptation_prompts gives
    it); with exclude_adapted none of them is evaluated, and the cap still holds."""
    from molorec.evaluate import adaptation_facts, evaluated_rows
    from molorec.fusion import adaptation_prompts

    examples, _, instructions, _ = toy_domain()
    for scenario in ("warm", "cold"):
        s = eval_settings(max_examples=4)
        s["adaptation"]["prompt_choice"] = choice
        rows = evaluated_rows(examples, instructions, "test", scenario, s)
        n = s["adaptation"]["n_prompts"][scenario]
        prompts = adaptation_prompts(instructions, scenario, "test", n, choice)
        evaluated = [[t for t in m if t["role"] != "assistant"] for m in rows["messages"]]
        # Marked: exactly the evaluated rows whose prompt fusion adapted on.
        assert rows["adapted"].to_list() == [m in prompts for m in evaluated]
        assert adaptation_facts(rows, s)["adapted_examples"] == sum(m in prompts for m in evaluated)
        if choice == "target_scenario":  # the paper's: the first n evaluated are adapted on
            assert rows["adapted"].to_list() == [True] * n + [False] * (rows.height - n)
        kept = evaluated_rows(
            examples, instructions, "test", scenario, s | {"exclude_adapted": True}
        )
        assert not kept["adapted"].any() and kept.height == 4
        shown = [[t for t in m if t["role"] != "assistant"] for m in kept["messages"]]
        assert not any(m in prompts for m in shown)
        everything = evaluated_rows(
            examples, instructions, "test", scenario, s | {"max_examples": 0}
        )
        unadapted = everything.filter(~pl.col("adapted"))
        assert kept["user"].to_list() == unadapted["user"].to_list()[:4]
        assert adaptation_facts(kept, s)["adapted_examples"] == 0


def test_the_selection_set_has_its_own_cap():
    """max_examples caps the test examples; max_selection_examples the selection set."""
    from molorec.evaluate import evaluated_rows

    examples, _, instructions, _ = toy_domain()
    selection = examples.filter(pl.col("selection") & ~pl.col("cold"))
    assert selection.height > 3
    capped_test = eval_settings(max_examples=3)
    assert evaluated_rows(examples, instructions, "val", "warm", capped_test).height == (
        selection.height
    )
    assert evaluated_rows(examples, instructions, "test", "warm", capped_test).height == 3
    capped_val = eval_settings(max_selection_examples=2)
    val = evaluated_rows(examples, instructions, "val", "warm", capped_val)
    assert val["user"].to_list() == selection["user"].to_list()[:2]
    assert evaluated_rows(examples, instructions, "test", "warm", capped_val).height > 3


@pytest.mark.parametrize("order", ["reversed", "permuted"])
def test_the_order_check_changes_the_candidate_order_only(order):
    from molorec.evaluate import evaluated_rows, reorder_candidates

    examples, items, instructions, prompt = toy_domain()
    rows = evaluated_rows(examples, instructions, "test", "warm", eval_settings(max_examples=10))
    titles = dict(items.iter_rows())
    again = reorder_candidates(rows, items, order, 7, prompt)
    assert again.select("user", "target").equals(rows.select("user", "target"))
    moved = 0
    for before, after, msgs, new_msgs in zip(
        rows["candidates"], again["candidates"], rows["messages"], again["messages"], strict=True
    ):
        before, after = before.to_list(), after.to_list()
        assert sorted(after) == sorted(before)
        if order == "reversed":
            assert after == before[::-1]
        moved += after != before
        # The prompt lists the new order; everything else in the messages is unchanged.
        old_list = "||".join(titles[c] for c in before)
        new_list = "||".join(titles[c] for c in after)
        assert new_list in new_msgs[1]["content"]
        assert new_msgs[1]["content"] == msgs[1]["content"].replace(old_list, new_list)
        assert [new_msgs[0], new_msgs[2]] == [msgs[0], msgs[2]]
    assert moved == rows.height
    # Seeded: the same draw every time, another with another seed.
    assert reorder_candidates(rows, items, order, 7, prompt).equals(again)
    if order == "permuted":
        assert not reorder_candidates(rows, items, order, 8, prompt).equals(again)


def test_reordering_to_the_same_order_renders_the_stored_prompt():
    """The re-rendered prompt is the instruction stage's own: with the order kept, it
    equals instructions.parquet's messages exactly."""
    from molorec.evaluate import evaluated_rows, reorder_candidates

    examples, items, instructions, prompt = toy_domain()
    rows = evaluated_rows(examples, instructions, "test", "cold", eval_settings())
    twice = reorder_candidates(
        reorder_candidates(rows, items, "reversed", 0, prompt), items, "reversed", 0, prompt
    )
    assert twice["messages"].to_list() == rows["messages"].to_list()


def test_top1_agreement():
    from molorec.evaluate import top1_agreement

    given = pl.DataFrame(
        {"user": ["a", "b", "c", "d"], "ranking": [["x", "y"], ["y", "x"], [None, "x"], []]},
        schema={"user": pl.String, "ranking": pl.List(pl.String)},
    )
    other = given.with_columns(
        ranking=pl.Series([["x", "z"], ["x", "y"], [None, "x"], []], dtype=pl.List(pl.String))
    )
    # a agrees; b does not; an invalid first entry (c) or an empty answer (d) agrees with nothing.
    assert top1_agreement(given, other) == 0.25
    with pytest.raises(ValueError, match="same examples"):
        top1_agreement(given, other.reverse())


def test_rank_score_reaches_the_backend_for_every_row_set(tiny):
    """predict_variant_sets (both orders of the order check from one load): each row set
    predicted as predict_variants predicts it alone, with the settings' rank_score, which
    changes the ranking here."""
    from molorec.evaluate import (
        evaluated_rows,
        predict_variant_sets,
        predict_variants,
        reorder_candidates,
    )

    examples, items, instructions, prompt = toy_domain()
    rows = evaluated_rows(examples, instructions, "test", "warm", eval_settings(max_examples=4))
    titles = dict(items.iter_rows())
    s = {"backend": "rank", "max_new_tokens": 8, "batch_size": 2, "normalised_match": False}
    s["rank_score"] = "mean"
    reordered = reorder_candidates(rows, items, "reversed", 0, prompt)
    sets = {"given": rows, "reordered": reordered}
    [(variant, both)] = list(predict_variant_sets(tiny, {"base": None}, sets, titles, s))
    alone = dict(predict_variants(tiny, {"base": None}, rows, titles, s))["base"]
    assert variant == "base" and both["given"].equals(alone)
    again = dict(predict_variants(tiny, {"base": None}, reordered, titles, s))["base"]
    assert both["reordered"].equals(again)
    summed = dict(predict_variants(tiny, {"base": None}, rows, titles, s | {"rank_score": "sum"}))
    assert not summed["base"].equals(alone)  # rank_score reached the backend


def random_adapter(base: str, path, seed: int) -> str:
    """A LoRA adapter of ``base`` with random A and B (a trained one's B is not zero)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from molorec.model import load_base

    model, _ = load_base(base)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(path))
    return str(path)


def test_variants_of_one_load_predict_as_their_own_jobs(tiny, tmp_path):
    """predict_variant_sets merges each adapter in turn into one loaded model and puts the
    changed weights back from the base model's files, without a host copy of the model:
    every variant, the base model after two merges too, predicts as a job of its own."""
    import molorec.evaluate
    from molorec.evaluate import evaluated_rows, predict_variants

    examples, items, instructions, _ = toy_domain()
    rows = evaluated_rows(examples, instructions, "test", "warm", eval_settings(max_examples=4))
    titles = dict(items.iter_rows())
    s = {"backend": "rank", "max_new_tokens": 8, "batch_size": 2, "normalised_match": False}
    adapters = {
        "general": random_adapter(tiny, tmp_path / "general", 1),
        "domain": random_adapter(tiny, tmp_path / "domain", 2),
        "base": None,
    }
    together = dict(predict_variants(tiny, adapters, rows, titles, s))
    for variant, adapter in adapters.items():
        alone = dict(predict_variants(tiny, {variant: adapter}, rows, titles, s))[variant]
        assert together[variant].equals(alone), variant
    assert not together["domain"].equals(together["base"])  # the merges changed the model
    assert molorec.evaluate.safetensors_files(tiny) is not None  # not the host-copy fallback


def test_the_vllm_backend_serves_each_order_and_adapter_its_own_requests(monkeypatch, tmp_path):
    """The vLLM path of the order check, without a GPU: a stand-in engine (vLLM's LLM,
    SamplingParams, LoRARequest names) answers each chat with the first candidate its
    prompt lists, so each row set's predictions must come from its own prompts, and each adapter
    is asked with its own LoRARequest in one engine."""
    import sys
    import types

    from molorec.evaluate import evaluated_rows, predict_variant_sets, reorder_candidates

    examples, items, instructions, prompt = toy_domain()
    rows = evaluated_rows(examples, instructions, "test", "warm", eval_settings(max_examples=5))
    titles = dict(items.iter_rows())
    (tmp_path / "adapter_config.json").write_text('{"r": 16}')
    engines, asked = [], []

    class LLM:
        def __init__(self, model, seed, **lora):
            engines.append((model, lora))

        def chat(self, prompts, params, lora_request=None):
            asked.append((lora_request and lora_request.args, len(prompts)))
            texts = [m[-1]["content"].split("Candidates: [")[1].split("||")[0] for m in prompts]
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=t)]) for t in texts]

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, lambda **kw: kw
    lora = types.ModuleType("vllm.lora.request")
    lora.LoRARequest = lambda *args: types.SimpleNamespace(args=args)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora)

    s = {"backend": "vllm", "max_new_tokens": 8, "normalised_match": False}
    reordered = reorder_candidates(rows, items, "reversed", 0, prompt)
    sets = {"given": rows, "reordered": reordered}
    adapters = {"base": None, "domain": str(tmp_path)}
    out = dict(predict_variant_sets("/models/base", adapters, sets, titles, s))
    assert len(engines) == 1 and engines[0][1]["max_loras"] == 1
    request = ("domain-1", 1, str(tmp_path))
    assert asked == [(None, 5), (None, 5), (request, 5), (request, 5)]
    for variant in adapters:
        for name, frame in sets.items():
            first = [r[0] for r in out[variant][name]["ranking"].to_list()]
            listed = [c[0] for c in frame["candidates"].to_list()]
            assert first == listed, (variant, name)  # parsed from its own prompt's order
        given, again = (out[variant][n]["ranking"].to_list() for n in ("given", "reordered"))
        assert all(a[0] != b[0] for a, b in zip(given, again, strict=True))


def test_the_order_check_files_hold_the_reordered_run(tmp_path):
    import json

    from molorec.evaluate import _predictions, write_order_check

    rows = pl.DataFrame({"user": ["a", "b"], "target": ["x", "y"]})

    def preds(rankings):
        return _predictions(rows, rankings, [None, None], [0, 0], [0, 0])

    given, reordered = preds([["x", "y"], ["y", "x"]]), preds([["x", "y"], ["x", "y"]])
    facts = {"adapted_examples": 1, "exclude_adapted": False}
    check = write_order_check(given, reordered, tmp_path, "permuted", 0, 100, facts)
    written = json.loads((tmp_path / "order_check/metrics.json").read_text())
    assert written == check
    assert (written["HR@1"], written["top1_agreement"], written["order"]) == (0.5, 0.5, "permuted")
    assert written["adapted_examples"] == 1
    assert pl.read_parquet(tmp_path / "order_check/predictions.parquet").equals(reordered)


def test_the_report_states_answers_order_check_and_adaptation_overlap(tmp_path):
    import json

    from molorec.report import evaluation_checks

    def write(path, **metrics):
        path.mkdir(parents=True, exist_ok=True)
        (path / "metrics.json").write_text(json.dumps({"valid_ratio": 1.0, "n": 20} | metrics))

    eval_dir = tmp_path / "eval/d/warm"
    generated = {
        "invalid_answer_share": 0.25,
        "duplicate_answer_share": 0.5,
        "empty_answer_share": 0.0,
        "adapted_examples": 6,
        "exclude_adapted": False,
    }
    write(eval_dir / "molorec", **{"HR@1": 0.4, "NDCG@3": 0.5}, **generated)
    reordered = {"HR@1": 0.1, "NDCG@3": 0.2, "order": "reversed", "top1_agreement": 0.35}
    write(eval_dir / "molorec/order_check", **reordered)
    write(eval_dir / "pop", **{"HR@1": 0.3, "NDCG@3": 0.4}, invalid_answer_share=None)
    text = "\n".join(evaluation_checks(tmp_path, ["d"], ["warm"], ["molorec", "pop"]))
    answers, order = text.split("## Candidate order check")
    assert "| d | warm | molorec | 20 | 1.0000 | 0.2500 | 0.5000 | 0.0000 |" in answers
    assert "pop" not in answers  # nothing generated: no answer shares
    assert (
        "| d | warm | molorec | 20 | reversed | 0.4000 | 0.1000 | 0.5000 | 0.2000 | 0.3500 |"
        in order
    )
    assert "| d | warm | 20 | 6 | 0.3000 | False |" in order
    assert "They are evaluated, as the paper does" in order
