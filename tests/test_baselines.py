"""The content, brand and novelty baselines, the id_only flag, and the registry as the one list of
baselines (the schema's enum and the evaluation rule's wildcard follow it)."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import polars as pl
import pytest
import yaml
from conftest import REPO, sample_config

from molorec.baselines import BASELINES, TrainingData, rank

TITLES = {
    "serum": "Kalo Vitamin C Face Serum",
    "toner": "Kalo Rose Toner",  # shares the brand and more with the history's serum
    "hose": "Garden Hose 50 ft",
    "drill": "Cordless Drill Driver",
    "socks": "Wool Hiking Socks",
    "lamp": "Desk Lamp LED",
    # Titles sharing no character with the others: every baseline ties them.
    "n1": "1111",
    "n2": "2222",
    "n3": "3333",
}


def fitted(name: str, data: TrainingData, seed: int = 0):
    return BASELINES[name](seed=seed).fit(data)


def test_content_ranks_the_candidate_sharing_title_words_first():
    history = ["serum", "lamp"]
    candidates = ["hose", "drill", "toner", "socks"]
    for seed in range(5):  # the tie-break cannot be what puts it first
        model = fitted("content", TrainingData([], titles=TITLES), seed)
        for order in itertools.permutations(candidates):
            assert rank(model, history, list(order))[0] == "toner"


def test_content_matches_chinese_course_names_by_characters():
    """Course names have no spaces: a word analyzer would see 物理化学 and 无机化学 as two
    unrelated tokens; the candidate sharing 化学 must come first."""
    titles = {
        "phys": "物理化学",
        "inorg": "无机化学",
        "poetry": "古典诗词鉴赏",
        "systems": "计算机系统基础",
        "history": "中国文学史",
    }
    for seed in range(8):
        model = fitted("content", TrainingData([], titles=titles), seed)
        assert rank(model, ["phys"], ["poetry", "systems", "inorg", "history"])[0] == "inorg"


def test_content_weights_the_last_history_titles_most():
    """Two candidates, each like one history title as much as the other: the one like the
    later title wins, whichever order the history has."""
    titles = {
        "a": "Kalo Serum",
        "b": "Mire Serum",
        "a2": "Kalo Toner",
        "b2": "Mire Toner",
        "x": "Desk Lamp",
    }
    model = fitted("content", TrainingData([], titles=titles))
    assert rank(model, ["a", "b"], ["a2", "b2", "x"])[0] == "b2"
    assert rank(model, ["b", "a"], ["a2", "b2", "x"])[0] == "a2"


@pytest.mark.parametrize("name", ["content", "brand"])
def test_title_baselines_need_titles(name):
    with pytest.raises(ValueError, match="titles"):
        fitted(name, TrainingData([["a", "b"]]))


def test_brand_ranks_the_candidates_starting_with_the_last_titles_first_word_first():
    titles = TITLES | {
        "cleanser": "Kalo Foam Cleanser",
        "mask": "Mire Face Mask",
        "cream": "Mire Night Cream",
    }
    for seed in range(5):
        model = fitted("brand", TrainingData([], titles=titles), seed)
        for order in itertools.permutations(["mask", "toner", "hose", "cleanser"]):
            # the history's earlier titles do not count: only the last one's first word
            assert set(rank(model, ["lamp", "serum"], list(order))[:2]) == {"toner", "cleanser"}
            assert rank(model, ["serum", "cream"], list(order))[0] == "mask"


def test_novelty_ranks_the_candidates_no_trained_row_contains_first():
    data = TrainingData([], trained=frozenset({"a", "b", "c"}))
    model = fitted("novelty", data)
    for order in itertools.permutations(["a", "x", "b", "y", "c"]):
        ranking = rank(model, ["a"], list(order))
        assert set(ranking[:2]) == {"x", "y"}
        assert ranking == rank(model, ["a"], ["a", "x", "b", "y", "c"])  # hash order


def test_trained_items_are_every_item_of_the_rows_trained_on():
    from molorec.evaluate import trained_items

    examples = pl.DataFrame(
        {
            "history": [["h1"], ["h2"]],
            "target": ["t1", "t2"],
            "candidates": [["t1", "n1"], ["t2", "n2"]],
            "answer": [["t1", "ans1"], ["t2", "ans2"]],  # ans1: in no other column
            "held_out": [False, True],
        }
    )
    assert trained_items(examples) == {"h1", "t1", "n1", "ans1"}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_id_only_says_which_baselines_know_no_cold_item(name):
    """id_only baselines rank an item absent from every training sequence below the trained
    items (0 on cold targets among trained negatives); the others need not."""
    sequences = [["serum", "toner", "lamp"], ["toner", "lamp", "hose"], ["lamp", "drill"]] * 3
    trained = frozenset(i for s in sequences for i in s)
    # "socks" is cold (in no sequence and no trained row); the history, "boots", shares its
    # title's words, so a content baseline has reason to rank it first.
    titles = TITLES | {"boots": "Wool Hiking Boots"}
    data = TrainingData(sequences, titles=titles, trained=trained)
    lasts = {
        rank(fitted(name, data, seed), history, ["lamp", "socks", "toner"], key=str(seed))[-1]
        for seed in range(6)
        for history in (["boots"], ["serum", "boots"])  # no item trained on; one
    }
    if BASELINES[name].id_only:
        assert lasts == {"socks"}
    else:
        assert lasts != {"socks"}


@pytest.mark.parametrize("name", sorted(set(BASELINES) - {"random"}))
def test_baselines_are_deterministic_and_blind_to_candidate_order(name):
    """Same inputs, same ranking, from a second fit too; and the candidates' order never
    decides it (random is drawn per position, by design)."""
    sequences = [["serum", "toner", "lamp"], ["toner", "lamp", "hose"], ["lamp", "drill"]] * 3
    data = TrainingData(sequences, titles=TITLES, trained=frozenset({"serum", "toner", "lamp"}))
    candidates = ["n1", "toner", "n2", "lamp", "n3"]  # three exact ties
    first = rank(fitted(name, data, 3), ["serum", "toner"], candidates, key="u|1")
    again = fitted(name, data, 3)
    for order in itertools.permutations(candidates):
        assert rank(again, ["serum", "toner"], list(order), key="u|1") == first


@pytest.mark.parametrize("name", sorted(n for n, b in BASELINES.items() if b.id_only))
def test_items_no_sequence_holds_are_ordered_by_the_seeded_hash_alone(name):
    """A cold list (every candidate cold) is ordered by the per-item hash, the same for
    every order of the candidates: no floor of the scores may round the tie-break away."""
    import random

    sequences = [["serum", "toner", "lamp"], ["toner", "lamp", "hose"], ["lamp", "drill"]] * 3
    model = fitted(name, TrainingData(sequences, titles=TITLES))
    cold = [f"cold{k}" for k in range(12)]
    for history in (["serum", "toner"], ["unknown"]):
        expected = rank(model, history, cold)
        shuffled = list(cold)
        for k in range(10):
            random.Random(k).shuffle(shuffled)
            assert rank(model, history, shuffled) == expected
            assert rank(model, history, shuffled[::-1]) == expected


def test_schema_lists_the_registry_and_runs_every_baseline_by_default():
    schema = yaml.safe_load((REPO / "src/molorec/schemas/config.schema.yaml").read_text())
    spec = schema["properties"]["evaluate"]["properties"]["baselines"]
    assert set(spec["items"]["enum"]) == set(BASELINES)
    assert {"content", "novelty"} <= set(spec["default"])


def plan(workdir, target: str, baselines: list[str]) -> subprocess.CompletedProcess:
    """A dry run for ``target`` with evaluate.baselines set to ``baselines``."""
    config = sample_config()
    config["evaluate"]["baselines"] = baselines
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--dry-run"]
    cmd += ["--nolock", "--cores", "1", "--directory", str(workdir), target]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_one_job_evaluates_every_configured_baseline_of_a_scenario(tmp_path):
    """evaluate.baselines makes the outputs of one job per domain and scenario: asking for
    one baseline's metrics plans that job, which writes each configured baseline and no
    other; a baseline not configured has no rule."""
    added = plan(tmp_path, "results/eval/beauty/warm/pop/metrics.json", ["pop", "content"])
    assert added.returncode == 0, added.stderr[-2000:]
    jobs = re.findall(r"^rule (\w+):", added.stdout, re.M)
    assert jobs.count("evaluate_baselines") == 1, added.stdout[-3000:]
    assert "results/eval/beauty/warm/content/metrics.json" in added.stdout
    assert "/markov/" not in added.stdout
    missing = plan(tmp_path, "results/eval/beauty/warm/markov/metrics.json", ["pop", "content"])
    assert missing.returncode != 0
    assert "No rule to produce results/eval/beauty/warm/markov" in missing.stdout
