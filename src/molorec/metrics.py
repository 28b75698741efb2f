"""Ranking metrics with bootstrap intervals, and paired bootstrap tests between variants.

A prediction is a ranking: candidate item ids, best first. The target's 1-based rank r
(None when it is not ranked) gives HR@K = [r <= K], NDCG@K = [r <= K] / log2(r + 1) and
MRR = 1 / r (0 when unranked). Metrics are means over examples.
"""

from __future__ import annotations

import math

import numpy as np

CUTOFFS = (1, 3, 5)
METRICS = tuple(f"{m}@{k}" for m in ("HR", "NDCG") for k in CUTOFFS) + ("MRR",)


def target_rank(ranking: list, target) -> int | None:
    """1-based position of the target in the ranking, or None."""
    try:
        return ranking.index(target) + 1
    except ValueError:
        return None


def per_example(ranks: list[int | None]) -> dict[str, np.ndarray]:
    """Each metric's value for every example (the unit the bootstrap resamples)."""
    r = np.array([np.inf if x is None else x for x in ranks], dtype=float)
    out = {}
    for k in CUTOFFS:
        hit = r <= k
        out[f"HR@{k}"] = hit.astype(float)
        out[f"NDCG@{k}"] = np.where(hit, 1.0 / np.log2(np.minimum(r, 1e9) + 1), 0.0)
    out["MRR"] = np.where(np.isfinite(r), 1.0 / np.minimum(r, 1e18), 0.0)
    return out


def bootstrap_ci(
    values: np.ndarray, rng: np.random.Generator, n_boot: int = 1000, level: float = 0.95
) -> tuple[float, float]:
    if len(values) == 0:
        return (math.nan, math.nan)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def summarise(
    ranks: list[int | None], valid_ratio: float, seed: int = 0, n_boot: int = 1000
) -> dict:
    """metrics.json: every metric, its 95% bootstrap interval, valid_ratio and n."""
    values = per_example(ranks)
    rng = np.random.default_rng(seed)
    out: dict = {}
    for name in METRICS:
        v = values[name]
        out[name] = float(v.mean()) if len(v) else math.nan
        out[f"{name}_ci95"] = list(bootstrap_ci(v, rng, n_boot))
    out["valid_ratio"] = valid_ratio
    out["n"] = len(ranks)
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, seed: int = 0, n_boot: int = 2000) -> dict:
    """Mean difference a - b over the same examples, its 95% interval, and a two-sided
    bootstrap p-value for 'no difference'."""
    if len(a) != len(b):
        raise ValueError("paired bootstrap needs the same examples in both variants")
    diff = np.asarray(a, float) - np.asarray(b, float)
    if len(diff) == 0:
        return {"diff": math.nan, "ci95": [math.nan, math.nan], "p": math.nan}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(axis=1)
    observed = diff.mean()
    # Centred bootstrap: how often a resampled deviation is as large as the observed mean.
    p = np.mean(np.abs(means - observed) >= abs(observed))
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {"diff": float(observed), "ci95": [float(lo), float(hi)], "p": float(min(1.0, p))}
