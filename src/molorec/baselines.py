"""Non-LLM baselines scored on the same candidates: random, pop, markov, sasrec.

Each is fitted on training sequences (item ids, oldest first) and scores an example's
candidates given its history; higher is better. Ties are broken by a seeded per-item hash,
never by candidate order (the target's position in the list must not matter).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import torch
from torch import nn

from molorec.data.examples import stable_hash


def _tiebreak(items: list[str], seed: int) -> np.ndarray:
    return np.array([stable_hash(seed, "tie", i) for i in items], dtype=np.float64) / 2.0**64


class Random:
    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, sequences: list[list[str]]) -> Random:
        return self

    def score(self, history: list[str], candidates: list[str], key: str = "") -> np.ndarray:
        rng = np.random.default_rng(stable_hash(self.seed, "random", key))
        return rng.random(len(candidates))


class Pop:
    """Training popularity."""

    def __init__(self, seed: int = 0):
        self.seed, self.counts = seed, Counter()

    def fit(self, sequences: list[list[str]]) -> Pop:
        self.counts = Counter(i for seq in sequences for i in seq)
        return self

    def score(self, history, candidates, key: str = "") -> np.ndarray:
        pop = np.array([self.counts[c] for c in candidates], dtype=np.float64)
        return pop + _tiebreak(candidates, self.seed) * 1e-3


class Markov:
    """First-order transitions: how often each candidate followed the last history item;
    popularity breaks ties (and scores users whose last item was never seen)."""

    def __init__(self, seed: int = 0):
        self.pop = Pop(seed)
        self.next: dict[str, Counter] = defaultdict(Counter)

    def fit(self, sequences: list[list[str]]) -> Markov:
        self.pop.fit(sequences)
        for seq in sequences:
            for a, b in zip(seq, seq[1:], strict=False):
                self.next[a][b] += 1
        return self

    def score(self, history, candidates, key: str = "") -> np.ndarray:
        following = self.next.get(history[-1], Counter()) if history else Counter()
        trans = np.array([following[c] for c in candidates], dtype=np.float64)
        pop = self.pop.score(history, candidates)
        return trans * (1.0 + pop.max()) + pop


class _SASRecNet(nn.Module):
    def __init__(
        self, n_items: int, dim: int, max_len: int, layers: int, heads: int, dropout: float
    ):
        super().__init__()
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        block = nn.TransformerEncoderLayer(
            dim, heads, dim * 2, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, layers)
        self.norm = nn.LayerNorm(dim)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position, attending only to earlier items."""
        n = seq.shape[1]
        x = self.items(seq) + self.positions(torch.arange(n, device=seq.device))
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=seq.device), 1)
        return self.norm(self.encoder(x, mask=causal, src_key_padding_mask=seq == 0))


class SASRec:
    """A compact SASRec (Kang and McAuley, 2018): self-attention over the item sequence,
    trained with next-item cross-entropy over all items; CPU-friendly on domain scale."""

    def __init__(
        self,
        seed: int = 0,
        dim: int = 64,
        max_len: int = 50,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        epochs: int = 30,
        lr: float = 1e-3,
        batch_size: int = 128,
    ):
        self.seed, self.dim, self.max_len = seed, dim, max_len
        self.layers, self.heads, self.dropout = layers, heads, dropout
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size

    def _encode(self, seq: list[str]) -> list[int]:
        return [self.index[i] for i in seq if i in self.index][-self.max_len :]

    def fit(self, sequences: list[list[str]]) -> SASRec:
        torch.manual_seed(self.seed)
        items = sorted({i for seq in sequences for i in seq})
        self.index = {item: k + 1 for k, item in enumerate(items)}  # 0 pads
        self.net = _SASRecNet(
            len(items), self.dim, self.max_len, self.layers, self.heads, self.dropout
        )
        rows = [self._encode(seq)[-(self.max_len + 1) :] for seq in sequences]
        rows = [r for r in rows if len(r) >= 2]
        if not rows:
            return self
        width = max(len(r) for r in rows) - 1
        inputs = torch.zeros((len(rows), width), dtype=torch.long)
        targets = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):  # left-aligned: position t predicts item t + 1
            inputs[k, : len(r) - 1] = torch.tensor(r[:-1])
            targets[k, : len(r) - 1] = torch.tensor(r[1:])
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        self.net.train()
        for _ in range(self.epochs):
            for batch in torch.randperm(len(rows), generator=generator).split(self.batch_size):
                hidden = self.net(inputs[batch])
                logits = hidden @ self.net.items.weight.T
                loss = nn.functional.cross_entropy(
                    logits.flatten(0, 1), targets[batch].flatten(), ignore_index=0
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.net.eval()
        return self

    def score(self, history, candidates, key: str = "") -> np.ndarray:
        seq = self._encode(history)
        tie = _tiebreak(candidates, self.seed) * 1e-6
        if not seq:
            return tie
        with torch.no_grad():
            hidden = self.net(torch.tensor([seq]))[0, -1]
            known = [self.index.get(c, 0) for c in candidates]
            scores = self.net.items.weight[known] @ hidden
        scores[torch.tensor(known) == 0] = -1e9  # never-trained items rank last
        return scores.numpy().astype(np.float64) + tie


BASELINES = {"random": Random, "pop": Pop, "markov": Markov, "sasrec": SASRec}


def rank(model, history: list[str], candidates: list[str], key: str = "") -> list[str]:
    scores = model.score(history, candidates, key)
    return [candidates[i] for i in np.argsort(-scores, kind="stable")]
