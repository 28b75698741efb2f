"""Non-LLM baselines scored on the same candidates: random, pop, markov, sasrec, content,
brand and novelty.

Each is fitted on what the adapters may learn from (TrainingData: the domain's training
sequences, the item titles, the items of the rows an adapter trained on) and scores an
example's candidates given its history; higher is better. Ties are broken by a seeded
per-item hash, never by candidate order (the target's position in the list must not matter).

Adding a baseline is one class and one BASELINES entry (and its name in the schema's
``evaluate.baselines`` enum, which a test keeps equal to BASELINES): the evaluation rule's
wildcard is built from BASELINES. torch and scikit-learn are imported where they are used,
so that reading the registry (the Snakefile does) stays cheap.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from molorec.data.examples import stable_hash


@dataclass(frozen=True)
class TrainingData:
    """What a baseline may learn from (molorec.evaluate.baseline_training_data).

    sequences: the items the adapters may train on, one list per user, oldest first.
    titles: item -> title for the domain's whole catalog; content only, no interaction.
    trained: every item in a row an adapter trained on (history, target, candidates and
    answer of the examples with held_out false).
    """

    sequences: list[list[str]]
    titles: dict[str, str] = field(default_factory=dict)
    trained: frozenset[str] = frozenset()


def _tiebreak(items: list[str], seed: int) -> np.ndarray:
    return np.array([stable_hash(seed, "tie", i) for i in items], dtype=np.float64) / 2.0**64


class Baseline:
    """id_only: the baseline scores a candidate from its item id in the training sequences
    alone. A cold item is in none of them, so it gets no score of its own, only the
    tie-break: on cold targets such a baseline scores 0 by construction when the negatives
    are trained items, and the tie-break's chance when they are cold too. The report reads
    it to say so."""

    id_only = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, data: TrainingData) -> Baseline:
        return self

    def score(self, history: list[str], candidates: list[str], key: str = "") -> np.ndarray:
        raise NotImplementedError


class Random(Baseline):
    def score(self, history: list[str], candidates: list[str], key: str = "") -> np.ndarray:
        rng = np.random.default_rng(stable_hash(self.seed, "random", key))
        return rng.random(len(candidates))


class Pop(Baseline):
    """Training popularity."""

    id_only = True

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.counts = Counter()

    def fit(self, data: TrainingData) -> Pop:
        self.counts = Counter(i for seq in data.sequences for i in seq)
        return self

    def score(self, history, candidates, key: str = "") -> np.ndarray:
        pop = np.array([self.counts[c] for c in candidates], dtype=np.float64)
        return pop + _tiebreak(candidates, self.seed) * 1e-3


class Markov(Baseline):
    """First-order transitions: how often each candidate followed the last history item;
    popularity breaks ties (and scores users whose last item was never seen)."""

    id_only = True

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.pop = Pop(seed)
        self.next: dict[str, Counter] = defaultdict(Counter)

    def fit(self, data: TrainingData) -> Markov:
        self.pop.fit(data)
        for seq in data.sequences:
            for a, b in zip(seq, seq[1:], strict=False):
                self.next[a][b] += 1
        return self

    def score(self, history, candidates, key: str = "") -> np.ndarray:
        following = self.next.get(history[-1], Counter()) if history else Counter()
        trans = np.array([following[c] for c in candidates], dtype=np.float64)
        pop = self.pop.score(history, candidates)
        return trans * (1.0 + pop.max()) + pop


@functools.cache
def _sasrec_net_class():
    """The network, defined on first use: importing torch costs seconds."""
    import torch
    from torch import nn

    class SASRecNet(nn.Module):
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

    return SASRecNet


class SASRec(Baseline):
    """A compact SASRec (Kang and McAuley, 2018): self-attention over the item sequence,
    trained with next-item cross-entropy over all items; CPU-friendly on domain scale."""

    id_only = True

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
        super().__init__(seed)
        self.dim, self.max_len = dim, max_len
        self.layers, self.heads, self.dropout = layers, heads, dropout
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size

    def _encode(self, seq: list[str]) -> list[int]:
        return [self.index[i] for i in seq if i in self.index][-self.max_len :]

    def fit(self, data: TrainingData) -> SASRec:
        import torch
        from torch import nn

        sequences = data.sequences
        torch.manual_seed(self.seed)
        items = sorted({i for seq in sequences for i in seq})
        self.index = {item: k + 1 for k, item in enumerate(items)}  # 0 pads
        self.net = _sasrec_net_class()(
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
        import torch

        seq = self._encode(history)
        tie = _tiebreak(candidates, self.seed) * 1e-6
        known = [self.index.get(c, 0) for c in candidates]
        never_trained = np.array(known) == 0
        if not seq:  # no history item was trained on: the tie-break, unknown items last
            return tie - never_trained
        with torch.no_grad():
            hidden = self.net(torch.tensor([seq]))[0, -1]
            scores = (self.net.items.weight[known] @ hidden).numpy().astype(np.float64)
        # Never-trained items rank last, in tie-break order among themselves: one below the
        # lowest learned score (beside a -1e9 floor the 1e-6 tie-break rounds away, and
        # the candidates' order would decide).
        trained = scores[~never_trained]
        scores[never_trained] = trained.min() - 1.0 if trained.size else 0.0
        return scores + tie


class Content(Baseline):
    """Titles only: TF-IDF cosine between each candidate's title and the history's titles,
    the history's last titles weighted most (weight ``recency ** age``, age 0 the last).

    The vectorizer (scikit-learn's TfidfVectorizer) is fitted on the titles of the domain's
    whole catalog: titles are the content an LLM sees in its prompt too, and no interaction
    enters. Character n-grams within words (char_wb, 2 to 5): Chinese course names have no
    spaces, so a word analyzer sees each whole name as one token and almost no overlap,
    while n-grams match 化学 in 有机化学 and 物理化学; on Latin titles they match a brand or
    "Moisturizing" / "Moisturizer" as well. The analyzer, the n-gram range and the recency
    weight were chosen on the selection users' validation examples of both sample domains
    (README, Baselines), never on test.
    """

    ANALYZER = "char_wb"
    NGRAMS = (2, 5)
    RECENCY = 0.8

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.rows: dict[str, int] = {}

    def fit(self, data: TrainingData) -> Content:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not data.titles:
            raise ValueError("the content baseline needs the item titles (TrainingData.titles)")
        items = sorted(data.titles)  # one order whatever the dict's
        texts = [data.titles[i] for i in items]
        self.vectorizer = TfidfVectorizer(analyzer=self.ANALYZER, ngram_range=self.NGRAMS)
        self.matrix = self.vectorizer.fit_transform(texts)  # rows L2-normalised
        self.rows = {item: k for k, item in enumerate(items)}
        return self

    def _vectors(self, items: list[str]):
        unknown = [i for i in items if i not in self.rows]
        if unknown:
            raise KeyError(f"content baseline: no title for items {unknown[:3]}")
        return self.matrix[[self.rows[i] for i in items]]

    def score(self, history, candidates, key: str = "") -> np.ndarray:
        tie = _tiebreak(candidates, self.seed) * 1e-9
        if not history:
            return tie
        weights = self.RECENCY ** np.arange(len(history) - 1, -1, -1, dtype=np.float64)
        cosines = (self._vectors(candidates) @ self._vectors(history).T).toarray()
        return cosines @ weights + tie


class Brand(Baseline):
    """Issue 19's two-line heuristic: the candidates whose title starts with the word the
    last history title starts with (on Amazon titles, mostly the brand) first, the seeded
    per-item hash ordering each group. Content's TF-IDF cosine rewards titles of the same
    kind of product; a user loyal to a brand buys other kinds from it, which this catches.
    A Chinese course name has no spaces, so it is one word: there it matches no candidate
    (a user's own items are never candidates) and is the tie-break alone."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.first: dict[str, str] = {}

    def fit(self, data: TrainingData) -> Brand:
        if not data.titles:
            raise ValueError("the brand baseline needs the item titles (TrainingData.titles)")
        self.first = {i: (t.split() or [""])[0].lower() for i, t in data.titles.items()}
        return self

    def score(self, history, candidates, key: str = "") -> np.ndarray:
        tie = _tiebreak(candidates, self.seed) * 1e-3
        if not history:
            return tie
        last = self.first[history[-1]]
        same = np.array([self.first[c] == last for c in candidates], dtype=np.float64)
        return same + tie


class Novelty(Baseline):
    """What 'pick the unfamiliar title' scores: the candidates that no trained row contains
    first, the seeded per-item hash ordering each group. A cold figure at or below it shows
    no skill beyond spotting which titles the adapter never saw."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.trained: frozenset[str] = frozenset()

    def fit(self, data: TrainingData) -> Novelty:
        self.trained = data.trained
        return self

    def score(self, history, candidates, key: str = "") -> np.ndarray:
        unseen = np.array([c not in self.trained for c in candidates], dtype=np.float64)
        return unseen + _tiebreak(candidates, self.seed) * 1e-3


BASELINES: dict[str, type[Baseline]] = {
    "random": Random,
    "pop": Pop,
    "markov": Markov,
    "sasrec": SASRec,
    "content": Content,
    "brand": Brand,
    "novelty": Novelty,
}


def rank(model, history: list[str], candidates: list[str], key: str = "") -> list[str]:
    scores = model.score(history, candidates, key)
    return [candidates[i] for i in np.argsort(-scores, kind="stable")]
