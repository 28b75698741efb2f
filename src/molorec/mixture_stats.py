"""What a learned mixture's weights say, from the weights alone. numpy only: the report reads
them in a job of the light data env (envs/data.yaml), which has no torch."""

from __future__ import annotations

import numpy as np

COLLAPSE = 0.01  # a weight below this or above 1 - this switches an adapter (nearly) off


def weight_entropy(w) -> float:
    """Mean entropy (nats) of the groups' weights (one row per group), each normalised to
    sum 1: ln(n) for equal weights, 0 for a mixture that has collapsed onto one adapter
    everywhere."""
    w = np.asarray(w, dtype=np.float64)
    p = w / w.sum(-1, keepdims=True)
    return float(-(p * np.log(np.maximum(p, 1e-12))).sum(-1).mean())


def collapsed_share(general_weights: list[float], eps: float = COLLAPSE) -> float:
    """Share of the modules whose general-adapter weight is below eps or above 1 - eps."""
    if not general_weights:
        return 0.0
    return sum(w < eps or w > 1 - eps for w in general_weights) / len(general_weights)
