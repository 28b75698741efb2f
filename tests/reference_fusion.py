"""The original MoLoRec fusion objective, kept as a reference: token by token, a full
forward and backward without KV cache for every scored token (greedy decoding likewise
recomputes the whole sequence for every new token). Independent of molorec.fusion: its
own entropy, separators and title positions, written the plain way."""

from __future__ import annotations

import torch


def entropy(logits: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Categorical(logits=logits.float()).entropy()


def separator_ids(tokenizer, separator: str = "||") -> set[int]:
    """Every token that decodes to text holding the separator."""
    return {i for i in range(len(tokenizer)) if separator in tokenizer.decode([i])}


def chosen_positions(answer: list[int], k: int, separators: set[int], stop: set[int]) -> list[int]:
    """The first k positions of every title: the runs between separators, before a stop."""
    end = next((j for j, token in enumerate(answer) if token in stop), len(answer))
    cuts = [j for j in range(end) if answer[j] in separators] + [end]
    positions, start = [], 0
    for cut in cuts:
        positions += list(range(start, cut))[:k]
        start = cut + 1
    return positions


def original_gradient(mixture, tokenizer, prompts, k: int, max_new_tokens: int) -> torch.Tensor:
    """d(mean entropy)/d(theta) the original way; returns the accumulated gradient."""
    model = mixture.model
    separators = separator_ids(tokenizer)
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    work = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        answer: list[int] = []
        with torch.no_grad():
            for _ in range(max_new_tokens):  # greedy, no cache: the whole sequence every time
                seq = torch.cat([ids, torch.tensor([answer], dtype=torch.long)], dim=1)
                token = int(model(input_ids=seq).logits[0, -1].argmax())
                answer.append(token)
                if token in stop:
                    break
        work += [(ids, answer[:j]) for j in chosen_positions(answer, k, separators, stop)]
    mixture.mixing.theta.grad = None
    for ids, prefix in work:
        seq = torch.cat([ids, torch.tensor([prefix], dtype=torch.long)], dim=1)
        logits = model(input_ids=seq).logits[0, -1]  # every position's logits, as the original
        (entropy(logits) / len(work)).backward()
    return mixture.mixing.theta.grad.clone()
