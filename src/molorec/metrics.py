"""Ranking metrics with bootstrap intervals, and paired bootstrap tests between variants.

A prediction is a ranking: candidate item ids, best first. The target's 1-based rank r
(None when it is not ranked) gives HR@K = [r <= K], NDCG@K = [r <= K] / log2(r + 1) and
MRR = 1 / r (0 when unranked). Metrics are means over examples.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

CUTOFFS = (1, 3, 5)
METRICS = tuple(f"{m}@{k}" for m in ("HR", "NDCG") for k in CUTOFFS) + ("MRR",)
# The headline metrics: the selection of the fused lr sums them, the report tests and
# tabulates them, the jobs log them.
HEADLINE = ("HR@1", "HR@3", "NDCG@3")


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
    bootstrap p-value for 'no difference'; also n and sd, the per-example differences'
    standard deviation (ddof 1), from which min_detectable_effect derives.

    The p-value is (k + 1) / (n_boot + 1), k the resamples whose centred mean is as far from 0
    as the observed one: a Monte Carlo p-value is never 0, so no adjustment multiplies a 0.
    A resampled mean depends only on how often each distinct difference is drawn, so the
    resamples draw those counts (multinomial, the same distribution as resampling examples):
    the cost grows with the distinct values (a few for HR@k and NDCG@k), not with n."""
    if len(a) != len(b):
        raise ValueError("paired bootstrap needs the same examples in both variants")
    diff = np.asarray(a, float) - np.asarray(b, float)
    n = len(diff)
    if n == 0:
        nan = math.nan
        return {"diff": nan, "ci95": [nan, nan], "p": nan, "n": 0, "sd": nan}
    values, counts = np.unique(diff, return_counts=True)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // len(values))  # bounds the memory of one draw
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        means[start : start + size] = rng.multinomial(n, counts / n, size=size) @ values / n
    observed = diff.mean()
    # Centred bootstrap: how often a resampled deviation is as large as the observed mean.
    k = int(np.sum(np.abs(means - observed) >= abs(observed)))
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {
        "diff": float(observed),
        "ci95": [float(lo), float(hi)],
        "p": (k + 1) / (n_boot + 1),
        "n": n,
        "sd": float(diff.std(ddof=1)) if n > 1 else math.nan,
    }


ADJUSTMENTS = ("holm", "bh")


def adjust_pvalues(p, method: str = "holm") -> np.ndarray:
    """Adjusted p-values over one family of tests; NaN entries (no examples) are no test:
    they stay NaN and do not count in the family size m.

    holm: Holm's step-down (1979), controls the family-wise error rate. With the m p-values
    sorted, p_(1) <= ... <= p_(m): adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    bh: Benjamini and Hochberg's step-up (1995), controls the false discovery rate:
    adj_(i) = min_{j >= i} min(1, m p_(j) / j)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    ranked = p[order]
    i = np.arange(1, m + 1)
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - i + 1) * ranked))
    elif method == "bh":
        adj = np.minimum.accumulate(np.minimum(1.0, m * ranked / i)[::-1])[::-1]
    else:
        raise ValueError(f"unknown p-value adjustment {method!r}: one of {ADJUSTMENTS}")
    out[order] = adj
    return out


POWER = 0.8


def min_detectable_effect(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The smallest mean paired difference a two-sided test at level ``alpha`` detects with
    probability ``power`` on n examples (normal approximation):
    MDE = (z_{1 - alpha/2} + z_power) * sd / sqrt(n), sd the standard deviation of the
    per-example differences. For a binary metric (HR@k) the differences are -1, 0 or 1, so
    sd^2 = discordant-pair rate - (mean difference)^2 (times n / (n - 1)). NaN when sd is 0
    or unknown (no example differs: the run gives no estimate of the spread)."""
    if n < 2 or not sd > 0:
        return math.nan
    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * sd / math.sqrt(n)


def resamples_for(m: int, alpha: float, n_boot: int) -> int:
    """Bootstrap resamples for a family of m tests: at least n_boot, and enough that a
    p-value's resolution 1 / (B + 1) is a tenth of the strictest adjusted level alpha / m
    (else no test of a large family could ever be significant, whatever the data)."""
    return max(n_boot, math.ceil(10 * m / alpha))
