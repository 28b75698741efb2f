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

from molorec.data.titles import SEPARATOR

_SPACE = re.compile(r"\s+")


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


def generate_texts(
    model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """Greedy answers for a list of prompts (system + user turns)."""
    tokenizer.padding_side = "left"
    stop = sorted({tokenizer.eos_token_id, tokenizer.pad_token_id} - {None})
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
    normalised).

    The prompt runs once. The candidates are then packed into one sequence after it: a 4D
    mask lets each token see the prompt's cache and its own candidate's earlier tokens
    only, and positions restart after the prompt for every candidate. So 30 titles cost one
    forward of their tokens, without 30 copies of the prompt's cache or padding."""
    if score not in RANK_SCORES:
        raise ValueError(f"evaluate.rank_score {score!r}: expected one of {RANK_SCORES}")
    device = model.device
    with torch.no_grad():
        # Only the last prompt position's logits are needed: skip the other rows.
        out = model(
            input_ids=torch.tensor([prompt], device=device), use_cache=True, logits_to_keep=1
        )
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        lengths = torch.tensor([len(c) for c in candidates])
        owner = torch.repeat_interleave(torch.arange(len(candidates)), lengths)
        offset = torch.cat([torch.arange(n) for n in lengths.tolist()])
        ids = torch.tensor([token for c in candidates for token in c], device=device)
        seen = (owner[:, None] == owner[None, :]) & (offset[:, None] >= offset[None, :])
        seen = torch.cat([torch.ones((len(ids), len(prompt)), dtype=torch.bool), seen], 1)
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(seen.shape, dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)
        # Token j of a candidate is predicted at its token j-1; token 0 by the prompt's end.
        scoring = torch.nonzero(offset < lengths[owner] - 1).squeeze(1)
        logits = (
            model(
                input_ids=ids[None],
                attention_mask=mask[None, None].to(device),
                position_ids=(len(prompt) + offset)[None].to(device),
                cache=out.cache,
                use_cache=True,
                logits_to_keep=scoring.to(device),
            )
            .logits[0]
            .float()
        )
        picked = logits.gather(-1, ids[scoring + 1, None].to(device))[:, 0] - logits.logsumexp(-1)
        starts = torch.cumsum(lengths, 0) - lengths
        scores = first[ids[starts.to(device)]].index_add(0, owner[scoring].to(device), picked)
        return scores / lengths.to(device) if score == "mean" else scores


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
