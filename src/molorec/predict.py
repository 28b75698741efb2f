"""Predictions: a ranking of each example's candidates, by generation or by scoring.

- ``generate``: batched greedy decoding (left padding); the answer is split on ``||`` and
  every part matched exactly (or, optionally, after normalising case, spaces and HTML
  entities) to the example's candidate titles. The ranking has one slot per entry, as the
  original scores the raw position of the split answer: a title that is not a candidate
  (invalid) or repeats an earlier one (duplicate) keeps its slot, as None, so it still
  pushes the entries after it down. Dropping them instead would rank ``X||Serum A`` with
  Serum A first and inflate HR for the models that invent most.
- ``rank``: every candidate title is scored by its log-likelihood as the first title of the
  answer (its tokens and the separator after it), summed or averaged over those tokens.
  The prompt is encoded once per example and the candidates, packed into one sequence,
  share its KV cache. A full ranking, always valid.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import torch

from molorec.io.titles import SEPARATOR
from molorec.schema import defaults

_SPACE = re.compile(r"\s+")

EVALUATE = defaults("evaluate")


def normalise(title: str) -> str:
    return _SPACE.sub(" ", html.unescape(title)).strip().casefold()


@dataclass
class Parsed:
    ranking: list[str | None]  # one slot per entry: a candidate id, None if invalid or repeated
    n_invalid: int
    n_duplicate: int


def parse_answer(
    text: str | None, titles: list[str], ids: list[str], normalised: bool = False
) -> Parsed:
    """Turn generated text into a ranking of candidate ids, slot by slot: the target's rank
    is its raw position in the answer. An empty part (a stray separator, ``A||||B``) is no
    entry and takes no slot; the original, which does not strip, would give it one."""
    if not text:
        return Parsed([], 0, 0)
    key = normalise if normalised else (lambda t: t)
    lookup = {key(t): i for t, i in zip(titles, ids, strict=True)}
    ranking, seen, invalid, duplicate = [], set(), 0, 0
    for part in text.split(SEPARATOR):
        # Titles never start or end with a pipe or a space (see titles.clean_title).
        title = part.strip().strip("|").strip()
        if not title:
            continue
        item = lookup.get(key(title))
        if item is None:
            invalid += 1
        elif item in seen:
            duplicate += 1
            item = None
        else:
            seen.add(item)
        ranking.append(item)
    return Parsed(ranking, invalid, duplicate)


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    prompt = [m for m in messages if m["role"] != "assistant"]
    return tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]


def stop_ids(tokenizer) -> set[int]:
    """The tokens that end an answer: the tokenizer's end of sequence and its padding."""
    return {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}


def generate_texts(
    model,
    tokenizer,
    prompts: list[list[dict]],
    max_new_tokens: int,
    batch_size: int = EVALUATE["batch_size"],
) -> list[str]:
    """Greedy answers for a list of prompts (system + user turns)."""
    tokenizer.padding_side = "left"
    stop = sorted(stop_ids(tokenizer))
    texts = []
    for lo in range(0, len(prompts), batch_size):
        enc = tokenizer.apply_chat_template(
            prompts[lo : lo + batch_size],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
            padding=True,
        ).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stop,
                pad_token_id=tokenizer.pad_token_id,
            )
        width = enc["input_ids"].shape[1]
        texts += decode_answers(tokenizer, out[:, width:])
    return texts


def decode_answers(tokenizer, tokens) -> list[str]:
    """Generated token rows to answer texts, without the special tokens (end of turn,
    padding) that would otherwise stick to the last title."""
    return tokenizer.batch_decode(tokens, skip_special_tokens=True)


def candidate_ids(tokenizer, titles: list[str]) -> list[list[int]]:
    """Tokens of each title as the first title of an answer: the title, then the separator."""
    return tokenizer([t + SEPARATOR for t in titles], add_special_tokens=False)["input_ids"]


RANK_SCORES = ("sum", "mean")


def rank_candidates(
    model, prompt: list[int], candidates: list[list[int]], score: str = "sum"
) -> torch.Tensor:
    """Log-likelihood of every candidate continuation of the prompt: ``sum`` over its tokens
    (the sequence's probability, which favours short titles), or ``mean`` per token (length
    normalised). One example of ``rank_batch``."""
    return rank_batch(model, [prompt], [candidates], score)[0]


def rank_batch(
    model, prompts: list[list[int]], candidates: list[list[list[int]]], score: str = "sum"
) -> list[torch.Tensor]:
    """``rank_candidates`` for several examples in two forward passes.

    The prompts run once, right-padded into one batch (the model's causal mask: no prompt
    token sees a pad, which come after it). Each example's candidates are then
    packed into one sequence after its prompt: a 4D mask lets each token see its own
    prompt's cache and its own candidate's earlier tokens only, and positions restart after
    the prompt for every candidate. So an example's 30 titles cost one forward of their
    tokens, without 30 copies of the prompt's cache, and several examples share each
    matrix product (larger, faster GEMMs). Padding is masked out: each example's scores are
    those of a batch of its own, up to float rounding."""
    if score not in RANK_SCORES:
        raise ValueError(f"evaluate.rank_score {score!r}: expected one of {RANK_SCORES}")
    device, dtype = model.device, next(model.parameters()).dtype
    n = len(prompts)
    p_len = torch.tensor([len(p) for p in prompts])
    width = int(p_len.max())
    real = torch.arange(width)[None] < p_len[:, None]  # [B, key]: not padding
    p_ids = torch.zeros((n, width), dtype=torch.long)
    p_ids[real] = torch.tensor([t for p in prompts for t in p])
    # Per candidate token: its example's row, the candidate it belongs to (-1: padding),
    # its offset in that candidate and that candidate's length.
    c_len = torch.tensor([sum(map(len, cands)) for cands in candidates])
    c_width = int(c_len.max())
    c_ids = torch.zeros((n, c_width), dtype=torch.long)
    owner = torch.full((n, c_width), -1)
    offset = torch.zeros((n, c_width), dtype=torch.long)
    length = torch.zeros((n, c_width), dtype=torch.long)
    lengths = [torch.tensor([len(c) for c in cands]) for cands in candidates]
    for b, cands in enumerate(candidates):
        k = int(c_len[b])
        c_ids[b, :k] = torch.tensor([token for c in cands for token in c])
        owner[b, :k] = torch.repeat_interleave(torch.arange(len(cands)), lengths[b])
        offset[b, :k] = torch.cat([torch.arange(m) for m in lengths[b].tolist()])
        length[b, :k] = lengths[b][owner[b, :k]]
    own = (owner[:, :, None] == owner[:, None, :]) & (owner[:, :, None] >= 0)
    own &= offset[:, :, None] >= offset[:, None, :]
    # Every query, a pad too, sees its example's prompt: no attention row is empty (NaN).
    seen = torch.cat([real[:, None, :].expand(n, c_width, width), own], -1)
    mask = torch.zeros(seen.shape, dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)
    last = p_len - 1  # each prompt's last position: its logits predict token 0
    last_kept = torch.unique(last)
    # Token j of a candidate is predicted at its token j-1 (the last one predicts nothing).
    rows, cols = torch.nonzero((owner >= 0) & (offset < length - 1), as_tuple=True)
    kept = torch.unique(cols)
    with torch.no_grad():
        out = model(
            # right padding: causally, no prompt token sees a pad (only the cache holds them)
            input_ids=p_ids.to(device),
            position_ids=torch.arange(width)[None].expand(n, width).to(device),
            use_cache=True,
            logits_to_keep=last_kept.to(device),  # the LM head runs there only
        )
        first = out.logits[torch.arange(n), torch.searchsorted(last_kept, last).to(device)]
        first = torch.log_softmax(first.float(), -1)
        logits = model(
            input_ids=c_ids.to(device),
            attention_mask=mask[:, None].to(device),
            position_ids=(p_len[:, None] + offset).to(device),
            cache=out.cache,
            use_cache=True,
            logits_to_keep=kept.to(device),
        ).logits
        row, col = rows.to(device), torch.searchsorted(kept, cols).to(device)
        target = c_ids[rows, cols + 1].to(device)
        picked = logits[row, col, target].float() - log_normaliser(logits)[row, col]
    scores = []
    for b in range(n):
        mine = rows == b
        starts = torch.cumsum(lengths[b], 0) - lengths[b]
        total = first[b, c_ids[b, starts].to(device)].index_add(
            0, owner[b, cols[mine]].to(device), picked[mine.to(device)]
        )
        scores.append(total / lengths[b].to(device) if score == "mean" else total)
    return scores


LOGSUMEXP_CHUNK = 1 << 17  # floats: a chunk of rows stays in cache while it is reduced


def log_normaliser(logits: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last axis in float32, a few rows at a time: the same values as
    ``logits.float().logsumexp(-1)``, without a float copy of the whole tensor going through
    memory four times (at 1,200 positions of a 49k vocabulary, 5x faster on one core)."""
    flat = logits.reshape(-1, logits.shape[-1])
    step = max(1, LOGSUMEXP_CHUNK // flat.shape[1])
    parts = [flat[i : i + step].float().logsumexp(-1) for i in range(0, flat.shape[0], step)]
    return torch.cat(parts).reshape(logits.shape[:-1])


def rank_brute_force(model, prompt: list[int], candidates: list[list[int]]) -> torch.Tensor:
    """Reference: each candidate scored by a full forward of prompt + candidate, no cache."""
    scores = []
    with torch.no_grad():
        for c in candidates:
            seq = torch.tensor([prompt + c], device=model.device)
            logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), dim=-1)
            positions = torch.arange(len(prompt) - 1, len(prompt) + len(c) - 1)
            scores.append(logp[positions, torch.tensor(c)].sum())
    return torch.stack(scores)
