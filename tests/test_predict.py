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
    rank_brute_force,
    rank_candidates,
)

IDS = [f"I{i}" for i in range(len(TITLES))]


@pytest.mark.parametrize(
    ("text", "ranking", "invalid", "duplicate"),
    [
        ("Halo 3: ODST", ["I1"], 0, 0),  # no separator
        ("  Halo 3: ODST ||LEGO City Fire Station  ", ["I1", "I2"], 0, 0),  # extra spaces
        ("Halo 3: ODST||Halo 4||数据结构（上）", ["I1", "I3"], 1, 0),  # a hallucinated title
        ("Halo 3: ODST||Halo 3: ODST||Halo 3: ODST", ["I1"], 0, 2),  # duplicates
        ("", [], 0, 0),  # empty output
        (None, [], 0, 0),
        ("||Burt's Bees Lip Balm|||Halo 3: ODST||", ["I5", "I1"], 0, 0),  # stray pipes
        ("halo 3: odst", [], 1, 0),  # exact matching is case-sensitive
    ],
)
def test_parse_answer(text, ranking, invalid, duplicate):
    parsed = parse_answer(text, TITLES, IDS)
    assert (parsed.ranking, parsed.n_invalid, parsed.n_duplicate) == (ranking, invalid, duplicate)


def test_parse_answer_with_titles_holding_pipes_and_normalised_matching():
    titles = ["Red|Blue Nail Polish", "Tom & Jerry", "A  B"]
    ids = ["x", "y", "z"]
    assert parse_answer("Red|Blue Nail Polish||Tom & Jerry", titles, ids).ranking == ["x", "y"]
    assert parse_answer("tom &amp; jerry||a b", titles, ids).ranking == []
    assert parse_answer("tom &amp; jerry||a b", titles, ids, normalised=True).ranking == ["y", "z"]


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
    # valid_ratio counts generated titles that are candidates.
    generated = preds.with_columns(n_invalid=pl.lit(3, dtype=pl.Int32))
    assert metrics_of(generated, 0)["valid_ratio"] == pytest.approx(12 / 21)

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
