"""The report's sentences and flags, on hand-made inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from molorec.metrics import (
    adjust_pvalues,
    min_detectable_effect,
    paired_bootstrap,
    resamples_for,
)
from molorec.report import (
    family_tests,
    fusion_health,
    id_only_baselines,
    paired_tests,
    summary_markdown,
    verdicts,
)

# --- multiple testing, power ---------------------------------------------------------------


def test_holm_on_the_textbook_example():
    # Holm-Bonferroni method (Wikipedia's example): four tests, alpha 0.05; H4 and H1 are
    # rejected, H2 and H3 not. Adjusted: (m - j + 1) p_(j) with a running maximum.
    p = [0.01, 0.04, 0.03, 0.005]
    adj = adjust_pvalues(p, "holm")
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(adj < 0.05) == [True, False, False, True]


# Benjamini and Hochberg (1995), section 4: 15 p-values; at q = 0.05 their procedure rejects 4
# hypotheses, Bonferroni 3.
BH_1995 = [
    0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344,
    0.0459, 0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000,
]  # fmt: skip


def test_bh_and_holm_on_benjamini_hochberg_1995():
    bh = adjust_pvalues(BH_1995, "bh")
    assert int((bh < 0.05).sum()) == 4
    assert bh[3] == pytest.approx(0.0095 * 15 / 4)  # the 4th smallest sets the 4 rejections
    assert bh[:3] == pytest.approx([0.0015, 0.003, 0.0095])  # m p_(i) / i
    assert bh[5] == pytest.approx(0.0298 * 15 / 7)  # the step-up's running minimum (not / 6)
    holm = adjust_pvalues(BH_1995, "holm")
    assert int((holm < 0.05).sum()) == 3
    assert holm[:4] == pytest.approx([0.0015, 0.0056, 0.0247, 0.114])
    # Shuffled, each p keeps its own adjusted value; a test without examples is no test.
    order = np.random.default_rng(0).permutation(15)
    shuffled = np.array(BH_1995)[order]
    assert adjust_pvalues(shuffled, "holm") == pytest.approx(holm[order])
    with_nan = adjust_pvalues([0.01, math.nan, 0.04], "holm")
    assert math.isnan(with_nan[1]) and with_nan[[0, 2]] == pytest.approx([0.02, 0.04])
    with pytest.raises(ValueError, match="unknown p-value adjustment"):
        adjust_pvalues(BH_1995, "bonferroni")


def test_min_detectable_effect():
    # (z_0.975 + z_0.8) = 1.95996 + 0.84162 = 2.80158, the textbook factor of 80% power.
    assert min_detectable_effect(0.5, 20, 0.05) == pytest.approx(2.80158 * 0.5 / 20**0.5, 1e-4)
    # At a Bonferroni level alpha / 60 the same n needs a larger effect.
    assert min_detectable_effect(0.5, 20, 0.05 / 60) > 1.4 * min_detectable_effect(0.5, 20, 0.05)
    # HR@1 differences: 4 wins, 2 losses in 20 examples: sd^2 = (0.3 - 0.1^2) * 20 / 19.
    d = np.array([1.0] * 4 + [-1.0] * 2 + [0.0] * 14)
    sd = paired_bootstrap(d, np.zeros(20))["sd"]
    assert sd**2 == pytest.approx((0.3 - 0.01) * 20 / 19)
    assert math.isnan(min_detectable_effect(0.0, 20, 0.05))  # no example differs


def test_bootstrap_p_value_is_never_zero_and_resolves_the_family():
    a, b = np.ones(50), np.zeros(50)
    r = paired_bootstrap(a, b, seed=0, n_boot=999)
    assert r["p"] == pytest.approx(1 / 1000)  # every resample is as extreme: (0 + 1) / 1000
    # 108 tests at 0.05: the strictest level is 0.05 / 108; a tenth of it must be resolvable.
    assert 1 / (resamples_for(108, 0.05, 1000) + 1) <= 0.05 / 108 / 10
    assert resamples_for(1, 0.05, 1000) == 1000


def hits(n: int, wins: int) -> tuple[np.ndarray, np.ndarray]:
    """Two variants' HR@1 on n examples: the first hits ``wins`` more, the second none."""
    return np.array([1.0] * wins + [0.0] * (n - wins)), np.zeros(n)


def test_adjustment_runs_over_the_whole_family():
    keys = {"scenario": "warm", "variant": "molorec", "against": "uniform"}
    a, b = hits(20, 5)  # raw p about 0.03: significant alone, not among many
    ours = [{"domain": "beauty", **keys, "metric": m, "a": a, "b": b} for m in ("HR@1", "NDCG@3")]
    alone = family_tests(ours, 0.05, "holm")
    assert alone["p_adj"].to_list() == pytest.approx((2 * alone["p"]).to_list())  # m = 2
    assert (alone["p_adj"] < 0.05).all()
    assert "is better than **uniform**" in verdicts(alone, 0.05)[0]
    zeros = np.zeros(20)
    nulls = [
        {"domain": f"d{k}", **keys, "metric": "HR@1", "a": zeros, "b": zeros} for k in range(8)
    ]
    family = family_tests([*ours, *nulls], 0.05, "holm")
    beauty = family.row(0, named=True)
    assert beauty["p_adj"] == pytest.approx(min(1.0, 10 * beauty["p"])) and beauty["p_adj"] > 0.05
    # The power of n = 20 at 0.05 / 10 (z_0.9975 + z_0.8 = 3.6487, sd 0.4443): five more
    # hits in 20 (+0.25) are below what this n detects; no difference at all gives no sd.
    assert beauty["mde"] == pytest.approx(3.6487 * 0.4443 / 20**0.5, 1e-3)
    assert beauty["mde"] > beauty["diff"] and math.isnan(family["mde"][2])
    line = verdicts(family.filter(pl.col("domain") == "beauty"), 0.05)[0]
    assert "**molorec** against **uniform**: not significant at n = 20" in line


def write_predictions(folder, hits: list[bool]) -> None:
    folder.mkdir(parents=True)
    pl.DataFrame(
        {
            "target": ["t"] * len(hits),
            "ranking": [["t", "x", "y", "z"] if h else ["x", "y", "z", "t"] for h in hits],
        }
    ).write_parquet(folder / "predictions.parquet")


def test_paired_tests_adjust_over_every_domain_and_scenario(tmp_path):
    results = tmp_path / "results"
    for domain in ("beauty", "courses"):
        for scenario in ("warm", "cold"):
            folder = results / "eval" / domain / scenario / "test"
            write_predictions(folder / "domain", [True] * 6 + [False] * 14)
            write_predictions(folder / "base", [False] * 20)
    one = paired_tests(results, ["beauty"], ["warm"], ["domain", "base"], 0.05, "holm")
    every = paired_tests(
        results, ["beauty", "courses"], ["warm", "cold"], ["domain", "base"], 0.05, "holm"
    )
    assert one.height == 3 and every.height == 12  # HR@1, HR@3, NDCG@3 per (domain, scenario)
    first = every.filter(pl.col("domain") == "beauty", pl.col("scenario") == "warm")
    # The same comparison, adjusted over a family four times as large: the 12 tests have the
    # same p here, so Holm multiplies each by 12 (not by the 3 or 6 of one scenario or domain).
    assert (first["p_adj"] > one["p_adj"]).all()
    assert first["p_adj"].to_list() == pytest.approx((12 * first["p"]).to_list())
    assert (every["resamples"] >= resamples_for(12, 0.05, 1000)).all()


def test_verdicts_judge_adjusted_p_values_and_name_n():
    rows = []
    for variant, other, hr, ndcg, p, p_adj in [
        ("domain", "base", 0.3, 0.2, 0.001, 0.01),
        ("molorec", "domain", -0.02, 0.01, 0.6, 1.0),
        ("molorec", "uniform", -0.2, -0.1, 0.001, 0.02),
        ("molorec", "general", 0.2, 0.15, 0.01, 0.2),  # raw p < 0.05, adjusted not
    ]:
        for metric, diff in (("HR@1", hr), ("HR@3", hr), ("NDCG@3", ndcg)):
            rows.append(
                {
                    "domain": "beauty",
                    "scenario": "warm",
                    "variant": variant,
                    "against": other,
                    "metric": metric,
                    "n": 20,
                    "diff": diff,
                    "lo": diff - 0.1,
                    "hi": diff + 0.1,
                    "p": p,
                    "p_adj": p_adj,
                    "mde": 0.45 if variant != "molorec" or other != "domain" else math.nan,
                }
            )
    lines = verdicts(pl.DataFrame(rows), 0.05)
    assert lines[0].startswith(
        "- beauty / warm: **domain** is better than **base** (n = 20): "
        "HR@1 +0.300 (p = 0.001, adjusted 0.010; mde 0.45)"
    )
    assert "**molorec** against **domain**: not significant at n = 20" in lines[1]
    assert "mde n/a, no example differs" in lines[1]
    assert "worse than **uniform**" in lines[2] and "adjusted 0.020" in lines[2]
    assert "against **general**: not significant at n = 20" in lines[3]
    assert not any("level" in line or "no difference" in line for line in lines)


def metrics_rows(scenarios, variants) -> pl.DataFrame:
    rows = []
    for scenario in scenarios:
        for variant in variants:
            row = {"domain": "beauty", "scenario": scenario, "variant": variant, "n": 20}
            for m in ("HR@1", "HR@3", "NDCG@3"):
                row |= {m: 0.1, f"{m}_lo": 0.0, f"{m}_hi": 0.2}
            rows.append(row | {"valid_ratio": 1.0})
    return pl.DataFrame(rows)


def test_cold_table_names_the_id_only_baselines(monkeypatch):
    import molorec.baselines as baselines

    class IdOnly:
        id_only = True

    class Titles:
        pass

    registry = {"pop": IdOnly, "markov": IdOnly, "sasrec": IdOnly, "content": Titles}
    monkeypatch.setattr(baselines, "BASELINES", registry)
    variants = ["domain", "random", "pop", "markov", "sasrec", "content"]
    id_only = id_only_baselines(variants)
    assert id_only == ["pop", "markov", "sasrec"]

    a, b = hits(20, 4)
    tests = family_tests(
        [
            {"domain": "beauty", "scenario": "cold", "variant": "domain", "against": "base"}
            | {"metric": m, "a": a, "b": b}
            for m in ("HR@1", "HR@3", "NDCG@3")
        ],
        0.05,
        "holm",
    )
    quality = {
        "beauty": {
            "reviews": {"records": 5, "kept": 5, "dropped": {}},
            "users": 2,
            "items": 3,
        }
    }
    cost = pl.DataFrame({"stage": ["data"], "seconds": [1.0]})
    text = summary_markdown(
        metrics_rows(["warm", "cold"], variants),
        tests,
        cost,
        quality,
        alpha=0.05,
        adjust="holm",
        id_only=id_only,
    )
    warm = text[text.index("### warm") : text.index("### cold")]
    cold = text[text.index("### cold") : text.index("## Did it learn?")]
    note = "*ID-only baselines (pop, markov, sasrec) score 0 on cold targets by construction*"
    assert note not in warm and note in cold
    assert "content baseline (titles only) is the non-LLM reference" in cold
    # The statistics are stated: the family, the adjustment, the power.
    assert "m = 3 tests" in text and "Holm's adjustment over all m" in text
    assert "80% power" in text and "not significant at n = 20" in text


def test_fusion_runs_without_signal_or_collapsed_are_flagged(tmp_path):
    results = tmp_path / "results"
    runs = {
        "lr0.5": ([[0.5, 0.5], [0.5, 0.5]], [0, 0], [0, 0]),  # no token scored: uniform
        # tokens scored, but fewer than one optimizer step's worth (pooled schedule)
        "lr3": ([[0.5, 0.5], [0.5, 0.5]], [12, 9], [0, 0]),
        "lr2": ([[0.999, 0.001], [0.4, 0.6]], [12, 9], [1, 2]),  # half the modules collapsed
        "lr1": ([[0.6, 0.4], [0.3, 0.7]], [12, 9], [1, 2]),
    }
    for name, (weights, scored, steps) in runs.items():
        folder = results / "fusion/beauty/warm" / name
        folder.mkdir(parents=True)
        stems = ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"]
        (folder / "fusion_weights.json").write_text(
            json.dumps(dict(zip(stems, weights, strict=True)))
        )
        pl.DataFrame({"step": [1, 2], "scored_tokens": scored, "optimizer_steps": steps}).write_csv(
            folder / "trajectory.csv"
        )
    health = fusion_health(results, ["beauty"], ["warm"])
    flags = dict(health.select("lr", "flag").iter_rows())
    assert flags["0.5"].startswith("NO SIGNAL") and flags["3"].startswith("NO SIGNAL")
    assert dict(health.select("lr", "optimizer_steps").iter_rows())["2"] == 2
    assert flags["2"] == "collapsed: 50% of modules at 0 or 1"
    assert flags["1"] == ""
    # What each run learned: the general weight per layer type and the weights' entropy.
    row = health.filter(pl.col("lr") == "1").row(0, named=True)
    assert row["general_weight_up_proj"] == pytest.approx((0.6 + 0.3) / 2)
    uniform = health.filter(pl.col("lr") == "0.5").row(0, named=True)
    assert uniform["weight_entropy"] == pytest.approx(math.log(2), abs=1e-6)
    assert row["weight_entropy"] < uniform["weight_entropy"]
