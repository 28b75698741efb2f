"""LoRA's input dropout on a CPU, drawing only the positions it drops.

peft computes ``B(A(dropout(x)))`` with ``torch.nn.Dropout``. On a CPU, torch draws its
mask one Bernoulli number per element on one thread, and peft first casts a bf16 ``x`` to
the adapter's float32: with p = 0.05 on the 210 LoRA modules of SmolLM2-135M that was
about half of a training step's time. :class:`SparseDropout` gives the same distribution
(each element dropped independently with probability p, the kept ones scaled by
1 / (1 - p)) from the gaps between dropped elements, which are geometric: about p · n
random numbers instead of n, then one scaling pass and a sparse fill.

The seed of every mask is drawn from torch's generator, so ``torch.manual_seed`` and the
checkpoints' saved RNG state govern it as they governed ``nn.Dropout``. The masks are
different draws from the same distribution: training runs are reproducible, but not
bit-identical to peft's own dropout. CPU only: on CUDA torch's dropout is already fast.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def dropped_positions(n: int, p: float, seed: int) -> np.ndarray:
    """Sorted flat indices, out of ``n``, each in with probability ``p`` independently.

    The gap from one dropped index to the next is Geometric(p), drawn as
    floor(E / -log(1 - p)) + 1 with E exponential, which is exact: P(gap > k) = (1 - p)^k.
    """
    rng = np.random.default_rng(seed)
    rate = -math.log1p(-p)
    expected = n * p
    size = int(expected + 8 * math.sqrt(expected * (1 - p))) + 16  # rarely short

    def run_lengths(start: int) -> np.ndarray:
        gaps = np.floor(rng.standard_exponential(size) / rate).astype(np.int64) + 1
        return start + np.cumsum(gaps)

    positions = run_lengths(-1)
    while positions[-1] < n:
        positions = np.concatenate([positions, run_lengths(int(positions[-1]))])
    return positions[: np.searchsorted(positions, n)]


class SparseDropout(torch.nn.Module):
    """``nn.Dropout(p)`` in distribution, for a LoRA module's input on a CPU."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 < p < 1:
            raise ValueError(f"lora_dropout {p}: SparseDropout needs 0 < p < 1")
        self.p = p

    def draw(self, n: int) -> torch.Tensor:
        """The flat positions dropped from an input of ``n`` elements, as int64."""
        seed = int(torch.randint(0, 2**63 - 1, ()))
        return torch.from_numpy(dropped_positions(n, self.p, seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        dropped = self.draw(x.numel())
        out = x.mul(1.0 / (1.0 - self.p)).contiguous()
        out.view(-1).index_fill_(0, dropped, 0)
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_sparse_dropout(model: torch.nn.Module) -> int:
    """Swap every LoRA module's ``nn.Dropout`` for :class:`SparseDropout`; returns how many.

    Nothing is saved with a dropout module, so the adapter's files are unchanged."""
    from peft.tuners.lora import LoraLayer

    swapped = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, dropout in module.lora_dropout.items():
                if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                    module.lora_dropout[name] = SparseDropout(dropout.p)
                    swapped += 1
    return swapped
