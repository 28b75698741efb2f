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
    """The original's flag: the predictions made while fewer than k tokens followed the last
    separator (or the answer's start), stopping after the stop token."""
    positions, flag = [], 0
    for j in range(len(answer)):
        if j > 0 and answer[j - 1] in separators:
            flag = 0
        if flag < k:
            positions.append(j)
        flag += 1
        if answer[j] in stop:
            break
    return positions


def original_greedy(model, ids: list[int], max_new_tokens: int, stop: set[int]) -> list[int]:
    """The original's greedy decoding: the whole sequence every token, argmax of the last."""
    answer: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=torch.tensor([ids + answer])).logits[0, -1].argmax())
            answer.append(token)
            if token in stop:
                break
    return answer


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


def original_adaptation(
    mixture, tokenizer, prompts, k: int, max_new_tokens: int, batch: int, accumulation: int, lr
) -> tuple[torch.Tensor, int]:
    """The original's train_weights.py loop with its ``step`` and ``update_model``, written
    out literally: one prompt at a time, greedy decoding token by token without cache; at
    every step the title counter ``flag`` restarts when the last token is a separator; the
    logits of the first k predictions of every title are kept (with gradient) in a tuple
    pooled across prompts; when it holds ``batch`` of them, update_model. Returns theta and
    the number of optimizer steps taken."""
    model = mixture.model
    separators = separator_ids(tokenizer)
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    theta = mixture.mixing.theta
    optimizer = torch.optim.Adam([theta], lr=lr)
    scores, epoch, steps = [], [1], [0]

    def update_model(scores):
        prob1 = torch.cat([torch.softmax(s.float(), dim=-1) for s in scores])
        prob2 = torch.cat([torch.log_softmax(s.float(), dim=-1) for s in scores])
        loss = (-(prob1 * prob2).sum() / len(scores)) / accumulation
        loss.backward()
        if epoch[0] % accumulation == 0:
            optimizer.step()
            optimizer.zero_grad()
            steps[0] += 1
        epoch[0] += 1

    for prompt in prompts:
        seq = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        flag = 0
        for _ in range(max_new_tokens):
            if seq[-1] in separators:
                flag = 0
            with torch.set_grad_enabled(flag < k):
                logits = model(input_ids=torch.tensor([seq])).logits[:, -1]
            if flag < k:
                scores.append(logits)
            flag += 1
            token = int(logits[0].argmax())
            seq.append(token)
            if len(scores) == batch:
                update_model(scores)
                scores = []
            if token in stop:
                break
    return theta.detach().clone(), steps[0]
