"""The report's sentences and flags, on hand-made inputs."""

from __future__ import annotations

import json

import polars as pl

from molorec.report import fusion_health, verdicts


def test_verdicts_say_better_worse_or_no_difference():
    rows = []
    for variant, other, hr, ndcg, p in [
        ("domain", "base", 0.3, 0.2, 0.01),
        ("molorec", "domain", -0.02, 0.01, 0.6),
        ("molorec", "uniform", -0.2, -0.1, 0.001),
    ]:
        for metric, diff in (("HR@1", hr), ("HR@3", hr), ("NDCG@3", ndcg)):
            rows.append(
                {
                    "domain": "beauty",
                    "scenario": "warm",
                    "variant": variant,
                    "against": other,
                    "metric": metric,
                    "diff": diff,
                    "lo": diff - 0.1,
                    "hi": diff + 0.1,
                    "p": p,
                }
            )
    lines = verdicts(pl.DataFrame(rows))
    assert lines[0].startswith("- beauty / warm: **domain** is better than **base**: HR@1 +0.300")
    assert "not significantly different from **domain**" in lines[1]
    assert "worse than **uniform**" in lines[2] and "(p = 0.001)" in lines[2]


def test_fusion_runs_without_signal_or_collapsed_are_flagged(tmp_path):
    results = tmp_path / "results"
    runs = {
        "lr0.5": ([[0.5, 0.5], [0.5, 0.5]], [0, 0]),  # no token scored: uniform in disguise
        "lr2": ([[0.999, 0.001], [0.4, 0.6]], [12, 9]),  # half the modules collapsed
        "lr1": ([[0.6, 0.4], [0.3, 0.7]], [12, 9]),
    }
    for name, (weights, scored) in runs.items():
        folder = results / "fusion/beauty/warm" / name
        folder.mkdir(parents=True)
        stems = ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"]
        (folder / "fusion_weights.json").write_text(
            json.dumps(dict(zip(stems, weights, strict=True)))
        )
        pl.DataFrame({"step": [1, 2], "scored_tokens": scored}).write_csv(folder / "trajectory.csv")
    health = fusion_health(results, ["beauty"], ["warm"])
    flags = dict(health.select("lr", "flag").iter_rows())
    assert flags["0.5"].startswith("NO SIGNAL")
    assert flags["2"] == "collapsed: 50% of modules at 0 or 1"
    assert flags["1"] == ""
