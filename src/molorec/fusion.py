"""Fusion: the mixing weights of frozen LoRA adapters (molorec.mixture), learned at test
time without labels, and the stage that writes them for every lr of a grid.

The objective is the mean entropy of the next-token distribution at the first k tokens of
every title of the greedy answer (the original's). The answer is generated with the KV
cache and no gradient; one forward pass with gradient over prompt + answer then scores the
chosen positions (the LM head runs only there). Adaptation takes the objective and the
guard as parameters: another objective is one function of (mixture, scored positions) and
one OBJECTIVES entry, another guard one GUARDS entry.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from molorec.mixture import LoraAdapter, Mixture
from molorec.mixture_stats import collapsed_share, weight_entropy
from molorec.predict import prompt_ids, stop_ids
from molorec.settings import FusionSettings

log = logging.getLogger("molorec.fusion")

# --- the objective ------------------------------------------------------------------------


def separator_ids(tokenizer, separator: str = "||") -> set[int]:
    """Every token whose text contains the separator, found in the tokenizer's vocabulary
    (never a hard-coded id): a title ends wherever the model emits one of them."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    ids = set()
    for i, piece in enumerate(pieces):
        if (
            piece is not None
            and "|" in piece
            and separator in tokenizer.convert_tokens_to_string([piece])
        ):
            ids.add(i)
    if not ids:
        raise ValueError(f"the tokenizer has no token containing {separator!r}")
    return ids


def chosen_positions(answer: list[int], k: int, separators: set[int], stop: set[int]) -> list[int]:
    """Indices (within the answer) of the tokens the objective scores, as the original does:
    the first k predictions of the answer and the first k after every separator token. A
    prediction of the separator or of the stop token within those k counts (it is where the
    model decides that a title ends), and the count restarts after the separator."""
    chosen, count = [], 0
    for j, tok in enumerate(answer):
        if count < k:
            chosen.append(j)
        if tok in stop:
            break
        count = 0 if tok in separators else count + 1
    return chosen


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@dataclass
class Scored:
    """A prompt batch with its greedy answers and the positions the objective scores."""

    input_ids: torch.Tensor  # [B, T] left-padded prompt + answer
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    rows: torch.Tensor  # [N] batch row of each chosen token
    cols: torch.Tensor  # [N] position whose logits predict the chosen token
    answers: list[list[int]]

    def subset(self, chosen: slice) -> Scored:
        """The same sequences, scoring only some of the chosen positions."""
        return Scored(
            self.input_ids,
            self.attention_mask,
            self.position_ids,
            self.rows[chosen],
            self.cols[chosen],
            self.answers,
        )


def greedy_answers(
    mixture: Mixture,
    tokenizer,
    prompts: list[list[dict]],
    k: int,
    max_new_tokens: int,
    separators: set[int],
) -> Scored:
    """Greedy answers with the KV cache and no gradient, and the positions to score."""
    model = mixture.model
    tokenizer.padding_side = "left"
    enc = tokenizer.apply_chat_template(
        prompts, add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True
    ).to(model.device)
    stop = stop_ids(tokenizer)
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(stop),
            pad_token_id=tokenizer.pad_token_id,
        )
    width = enc["input_ids"].shape[1]
    mask = torch.zeros_like(out)
    mask[:, :width] = enc["attention_mask"]
    rows, cols, answers = [], [], []
    for b in range(out.shape[0]):
        answer = out[b, width:].tolist()
        end = next((j + 1 for j, t in enumerate(answer) if t in stop), len(answer))
        mask[b, width : width + end] = 1
        answers.append(answer[:end])
        for j in chosen_positions(answer, k, separators, stop):
            rows.append(b)
            cols.append(width + j - 1)  # logits at t predict token t + 1
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long, device=out.device)  # noqa: E731
    return Scored(out, mask, position_ids, as_tensor(rows), as_tensor(cols), answers)


def answer_entropy(mixture: Mixture, scored: Scored) -> torch.Tensor:
    """Mean entropy at the chosen positions, in one forward pass with gradient."""
    return entropies(mixture, scored).mean()


def scored_logits(mixture: Mixture, scored: Scored) -> torch.Tensor:
    """The logits at each chosen position, with gradient. The model's own accessors (its
    decoder body and output embeddings) reach the hidden states and the LM head, whatever
    an architecture names them (Llama/Qwen ``model``/``lm_head``, GPT-NeoX ``gpt_neox``,
    BioGPT ``biogpt``/``output_projection``)."""
    model = mixture.model
    hidden = model.base_model(
        input_ids=scored.input_ids,
        attention_mask=scored.attention_mask,
        position_ids=scored.position_ids,
    ).last_hidden_state
    return model.get_output_embeddings()(hidden[scored.rows, scored.cols])


def entropies(mixture: Mixture, scored: Scored) -> torch.Tensor:
    """Entropy at each chosen position, with gradient."""
    return entropy(scored_logits(mixture, scored))


def answer_nll(mixture: Mixture, scored: Scored) -> torch.Tensor:
    """Negative log-likelihood of the sequence's own next token at each chosen position:
    with the labelled answer as the sequence, the recommendation loss of training."""
    targets = scored.input_ids[scored.rows, scored.cols + 1]
    logits = scored_logits(mixture, scored).float()
    return torch.nn.functional.cross_entropy(logits, targets, reduction="none")


# An objective: per chosen position, the value adaptation minimises, with gradient.
# entropy needs no label (molorec); answer_nll reads the labelled answers (the
# molorec_supervised control).
OBJECTIVES: dict[str, Callable[[Mixture, Scored], torch.Tensor]] = {
    "entropy": entropies,
    "answer_nll": answer_nll,
}


# --- guards -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """What keeps a mixture from collapsing onto one adapter: a penalty on the logits'
    distance from their start, added at every optimizer step, and a floor under every
    weight, set on the mixture when it is built."""

    l2: float = 0.0  # strength * sum((theta - theta_0)^2)
    floor: float = 0.0  # every weight in [floor, 1 - floor]

    def penalty(self, theta: torch.Tensor, start: torch.Tensor) -> torch.Tensor | None:
        return self.l2 * (theta - start).pow(2).sum() if self.l2 else None


# fusion.guard -> the guard of a fusion.guard_strength. none is the paper's method.
GUARDS: dict[str, Callable[[float], Guard]] = {
    "none": lambda strength: Guard(),
    "l2": lambda strength: Guard(l2=strength),
    "floor": lambda strength: Guard(floor=strength),
}


def guard_of(s: FusionSettings) -> Guard:
    if s.guard not in GUARDS:
        raise ValueError(f"fusion.guard {s.guard!r}: {' | '.join(GUARDS)}")
    return GUARDS[s.guard](s.guard_strength)


# --- adaptation ---------------------------------------------------------------------------


SCHEDULES = ("pooled", "prompt")


def adapt(
    mixture: Mixture,
    tokenizer,
    prompts: list[list[dict]],
    s: FusionSettings,
    progress: bool = False,
    on_step=None,
    drafts: list[list[int]] | None = None,
    objective: Callable[[Mixture, Scored], torch.Tensor] = OBJECTIVES["entropy"],
    guard: Guard | None = None,
) -> list[dict]:
    """Learn the mixing logits on unlabeled prompts (system + user turns only) and return
    the trajectory, a row per backward; ``on_step(row)`` runs after every row (benchmarks
    evaluate the mixture there). ``drafts``: the pooled schedule's answer drafts
    (``draft_answers`` at the starting weights), drafted here if not given. ``objective``:
    per scored position the value to minimise; ``guard``: the settings' (guard_of) unless
    given (its floor is the mixture's, set when the mixture was built)."""
    if s.schedule not in SCHEDULES:
        raise ValueError(f"fusion.schedule {s.schedule!r}: {' | '.join(SCHEDULES)}")
    torch.manual_seed(s.seed)
    mixture.model.eval()  # no dropout: the objective must be deterministic
    guard = guard or guard_of(s)
    adaptation = _Adaptation(mixture, tokenizer, s, objective, guard, on_step)
    if s.schedule == "prompt":
        return adaptation.per_prompt(prompts, progress)
    trajectory = adaptation.pooled(prompts, progress, drafts)
    log.info(
        "lr %g: %d answer tokens kept from the drafts, %d decoded",
        s.lr,
        adaptation.draft_tokens_kept,
        adaptation.decoded_tokens,
    )
    return trajectory


def adapt_supervised(
    mixture: Mixture,
    tokenizer,
    conversations: list[list[dict]],
    s: FusionSettings,
    progress: bool = False,
) -> list[dict]:
    """Learn the mixing logits on labelled examples (system, user and assistant turns):
    the mean answer_nll of each example's answer tokens, encoded as training encodes them
    (molorec.train.encode), one backward per example and an Adam step per ``accumulation``
    of them, for ``steps`` passes; a partial last group is applied too. Returns the
    trajectory, a row per backward, as adapt's."""
    from tqdm import tqdm

    from molorec.train import encode

    torch.manual_seed(s.seed)
    mixture.model.eval()
    encoded, _ = encode(tokenizer, conversations, max_length=1 << 30)
    adaptation = _Adaptation(
        mixture, tokenizer, s, OBJECTIVES["answer_nll"], guard_of(s), on_step=None
    )
    device = adaptation.theta.device
    bar = tqdm(total=s.steps * len(encoded), disable=not progress, desc="fusion", mininterval=10)
    adaptation.optimizer.zero_grad()
    pending = 0
    for _ in range(s.steps):
        for e in encoded:
            ids, answer = e.input_ids[: e.n_prompt], e.input_ids[e.n_prompt :]
            scored = sequence_positions(ids, answer, list(range(len(answer))), device)
            loss = adaptation.objective(mixture, scored).mean()
            (loss / s.accumulation).backward()
            pending += 1
            stepped = pending == s.accumulation
            if stepped:
                adaptation.step()
                pending = 0
            adaptation.log(float(loss.detach()), len(answer), len(answer), stepped)
            bar.update(1)
    if pending:
        adaptation.step()
        adaptation.trajectory[-1]["stepped"] = 1
        adaptation.trajectory[-1]["optimizer_steps"] = adaptation.optimizer_steps
    bar.close()
    return adaptation.trajectory


class _Adaptation:
    """The optimizer, the guard and the trajectory shared by both schedules."""

    def __init__(self, mixture: Mixture, tokenizer, s: FusionSettings, objective, guard, on_step):
        self.mixture, self.tokenizer, self.s, self.on_step = mixture, tokenizer, s, on_step
        self.objective, self.guard = objective, guard
        self.theta = mixture.mixing.theta
        self.start = self.theta.detach().clone()
        self.optimizer = torch.optim.Adam([self.theta], lr=s.lr)
        self.separators = separator_ids(tokenizer)
        self.stop = stop_ids(tokenizer)
        self.trajectory: list[dict] = []
        self.optimizer_steps = 0
        # pooled schedule: answer tokens taken from a checked draft, and decoded one by one
        self.draft_tokens_kept = self.decoded_tokens = 0

    def step(self) -> None:
        """One Adam step on the gradients accumulated so far (the guard's penalty added)."""
        penalty = self.guard.penalty(self.theta, self.start)
        if penalty is not None:
            penalty.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.optimizer_steps += 1

    def log(self, loss, scored_tokens: int, answer_tokens: int, stepped: bool) -> None:
        w = self.mixture.mixing.weights().detach()
        self.trajectory.append(
            {
                "step": len(self.trajectory) + 1,
                "loss": loss,
                "scored_tokens": scored_tokens,
                "answer_tokens": answer_tokens,
                "stepped": int(stepped),
                "optimizer_steps": self.optimizer_steps,
                "general_weight_mean": float(w[:, 0].mean()),
                "general_weight_min": float(w[:, 0].min()),
                "general_weight_max": float(w[:, 0].max()),
                "weight_entropy": weight_entropy(w.cpu().numpy()),
                "collapsed_share": collapsed_share(w[:, 0].tolist()),
            }
        )
        if self.on_step is not None:
            self.on_step(self.trajectory[-1])

    def per_prompt(self, prompts: list[list[dict]], progress: bool) -> list[dict]:
        """A step per prompt batch, or per tokens_per_step of its scored tokens, each step
        rescoring its tokens with the current weights in one forward pass."""
        from tqdm import tqdm

        s = self.s
        batches = [
            prompts[i : i + s.prompts_per_step] for i in range(0, len(prompts), s.prompts_per_step)
        ]
        bar = tqdm(
            total=s.steps * len(batches), disable=not progress, desc="fusion", mininterval=10
        )
        for _ in range(s.steps):
            for batch in batches:
                scored = greedy_answers(
                    self.mixture, self.tokenizer, batch, s.k, s.max_new_tokens, self.separators
                )
                size = s.tokens_per_step or max(len(scored.rows), 1)
                for lo in range(0, max(len(scored.rows), 1), size):
                    chunk = scored.subset(slice(lo, lo + size))
                    loss = None
                    if len(chunk.rows):  # an empty answer gives no signal: logged, not stepped
                        loss = self.objective(self.mixture, chunk).mean()
                        self.optimizer.zero_grad()
                        loss.backward()
                        self.step()
                    self.log(
                        None if loss is None else float(loss.detach()),
                        int(len(chunk.rows)),
                        # a prompt batch's answers, counted once, on its first chunk
                        sum(len(a) for a in scored.answers) if lo == 0 else 0,
                        loss is not None,
                    )
                bar.update(1)
        bar.close()
        return self.trajectory

    def pooled(
        self, prompts: list[list[dict]], progress: bool, drafts: list[list[int]] | None = None
    ) -> list[dict]:
        """The original's schedule (its ``step`` and ``update_model``), exactly: prompts one
        at a time; their scored positions pooled across prompts into batches of
        tokens_per_backward; each full batch one backward of mean entropy / accumulation;
        Adam steps after every accumulation-th batch (the batch counter starts at 1, so the
        first step comes after batch ``accumulation``). A step that falls inside an answer
        changes the weights there: the rest of that answer is decoded with the new weights,
        as the original's token-by-token loop does. The remainder (a partial batch, and the
        gradients of batches after the last step) is never applied, as in the original; the
        trajectory's last row says so (stepped 0).

        Answers are drafted first, every prompt's at the starting weights (``drafts``, from
        draft_answers, shared by every lr of a grid), and each draft is then checked
        under the weights of the moment (``greedy_from_draft``): one forward pass instead of
        a token-by-token decode wherever the weights have not changed the greedy answer."""
        from tqdm import tqdm

        s = self.s
        size, accumulation = s.tokens_per_backward, s.accumulation
        pooled, pooled_entropy, batch_number, answered = 0, 0.0, 1, 0
        self.optimizer.zero_grad()
        bar = tqdm(
            total=s.steps * len(prompts), disable=not progress, desc="fusion", mininterval=10
        )
        if drafts is None:
            drafts = draft_answers(self.mixture, self.tokenizer, prompts, s.max_new_tokens)
        drafts = list(drafts)
        for _ in range(s.steps):
            for i, prompt in enumerate(prompts):
                ids = prompt_ids(self.tokenizer, prompt)
                answer = drafts[i]
                decided = 0  # answer tokens fixed by earlier weights
                while True:
                    answer, kept = greedy_from_draft(
                        self.mixture, ids, answer, decided, s.max_new_tokens, self.stop
                    )
                    self.draft_tokens_kept += kept
                    self.decoded_tokens += len(answer) - decided - kept
                    positions = [
                        j
                        for j in chosen_positions(answer, s.k, self.separators, self.stop)
                        if j >= decided
                    ]
                    redecode = False
                    while positions:
                        take, positions = positions[: size - pooled], positions[size - pooled :]
                        scored = sequence_positions(ids, answer, take, self.theta.device)
                        total = self.objective(self.mixture, scored).sum()
                        (total / (size * accumulation)).backward()
                        pooled, pooled_entropy = (
                            pooled + len(take),
                            pooled_entropy + float(total.detach()),
                        )
                        if pooled < size:
                            continue
                        stepped = batch_number % accumulation == 0
                        if stepped:
                            self.step()
                        self.log(pooled_entropy / size, pooled, answered, stepped)
                        pooled, pooled_entropy, answered = 0, 0.0, 0
                        batch_number += 1
                        ends_here = answer[take[-1]] in self.stop or take[-1] + 1 == len(answer)
                        if stepped and not ends_here:
                            decided, redecode = take[-1] + 1, True
                            break
                    if not redecode:
                        break
                answered += len(answer)
                drafts[i] = answer  # the next pass's draft
                bar.update(1)
        bar.close()
        if pooled or answered or not self.trajectory:
            # never applied: a partial batch, or answers with nothing left to score
            self.log(pooled_entropy / pooled if pooled else None, pooled, answered, False)
        return self.trajectory


# Tokens guessed per forward pass of decoding, copied from where the answer's last two
# tokens occur earlier in prompt + answer (HF prompt lookup decoding): an answer repeats
# candidate titles from its prompt, so a pass usually accepts a title's remaining tokens.
LOOKUP_TOKENS = 20


def draft_answers(
    mixture: Mixture, tokenizer, prompts: list[list[dict]], max_new_tokens: int
) -> list[list[int]]:
    """Greedy answers at the current weights (greedy_continuation, one prompt at a time:
    on the sample 1.2x faster than a left-padded batch of 6 warm prompts, 1.9x than one of
    3 cold ones): guesses for ``greedy_from_draft`` to check, never used unchecked."""
    stop = stop_ids(tokenizer)
    return [
        greedy_continuation(mixture, prompt_ids(tokenizer, p), [], max_new_tokens, stop)
        for p in prompts
    ]


def greedy_from_draft(
    mixture: Mixture,
    ids: list[int],
    draft: list[int],
    decided: int,
    max_new_tokens: int,
    stop: set[int],
) -> tuple[list[int], int]:
    """The greedy answer after the prompt ``ids`` whose first ``decided`` tokens are fixed
    (``draft[:decided]``), under the current weights, and how many tokens of the draft past
    ``decided`` it kept.

    One forward pass over prompt + draft gives the model's greedy token at every answer
    position past ``decided`` -- the original's decoding (a full forward per token, the
    argmax of the last position's logits), for all positions at once. The draft is kept up
    to its first disagreement; the model's token there is taken, and the rest is decoded
    with the KV cache. A draft the model agrees with ends the answer where it ends (a stop
    token, or max_new_tokens)."""
    draft = draft[:max_new_tokens]
    complete = len(draft) == max_new_tokens or bool(draft and draft[-1] in stop)
    # prediction of answer token j: the logits at sequence position len(ids) + j - 1
    upto = len(draft) if complete else len(draft) + 1
    if decided >= upto:
        return draft[:decided], 0
    model = mixture.model
    seq = torch.tensor([ids + draft[: upto - 1]], dtype=torch.long, device=model.device)
    keep = torch.arange(len(ids) + decided - 1, len(ids) + upto - 1, device=model.device)
    with torch.no_grad():
        logits = model(input_ids=seq, use_cache=False, logits_to_keep=keep).logits[0]
    greedy = logits.argmax(-1).tolist()
    for offset, token in enumerate(greedy):
        j = decided + offset
        if j == len(draft) or token != draft[j]:
            answer = draft[:j] + [token]
            return answer + greedy_continuation(mixture, ids, answer, max_new_tokens, stop), offset
    return draft, len(draft) - decided


def greedy_continuation(
    mixture: Mixture, ids: list[int], prefix: list[int], max_new_tokens: int, stop: set[int]
) -> list[int]:
    """The greedy answer tokens after prompt + prefix (with the KV cache, no gradient),
    up to and including a stop token, for an answer of at most max_new_tokens in all.

    Guesses copied from the prompt are checked by one forward pass each and kept up to
    the first token the model would not choose (LOOKUP_TOKENS): the greedy answer, up to
    float rounding (a pass over several tokens rounds otherwise than one token at a time),
    at a fraction of the passes."""
    room = max_new_tokens - len(prefix)
    if room <= 0 or (prefix and prefix[-1] in stop):
        return []
    model = mixture.model
    seq = torch.tensor([ids + prefix], dtype=torch.long, device=model.device)
    with torch.no_grad():
        out = model.generate(
            input_ids=seq,
            attention_mask=torch.ones_like(seq),
            max_new_tokens=room,
            do_sample=False,
            eos_token_id=sorted(stop),
            pad_token_id=sorted(stop)[0],
            prompt_lookup_num_tokens=LOOKUP_TOKENS or None,  # 0: token by token
        )
    new = out[0, seq.shape[1] :].tolist()
    end = next((j + 1 for j, t in enumerate(new) if t in stop), len(new))
    return new[:end]


def sequence_positions(ids: list[int], answer: list[int], chosen: list[int], device) -> Scored:
    """One unpadded prompt + answer, scoring the given answer positions."""
    seq = torch.tensor([ids + answer], dtype=torch.long, device=device)
    width = len(ids)
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    return Scored(
        seq,
        torch.ones_like(seq),
        torch.arange(seq.shape[1], device=device)[None],
        as_tensor([0] * len(chosen)),
        as_tensor([width + j - 1 for j in chosen]),  # logits at t predict token t + 1
        [answer],
    )


TRAJECTORY_FIELDS = [
    "step",
    "loss",
    "scored_tokens",
    "answer_tokens",
    "stepped",
    "optimizer_steps",
    "general_weight_mean",
    "general_weight_min",
    "general_weight_max",
    "weight_entropy",
    "collapsed_share",
]


def write_outputs(
    mixture: Mixture, tokenizer, trajectory: list[dict], out_dir: str | Path
) -> dict[str, list[float]]:
    """adapter/ (one PEFT adapter), fusion_weights.json and trajectory.csv; returns the
    weights written."""
    out = Path(out_dir)
    adapter = out / "adapter"
    shutil.rmtree(adapter, ignore_errors=True)
    mixture.export(adapter, tokenizer)
    # Per wrapped layer, named as in the adapters' keys: weights in adapter order.
    weights = mixture.effective_weights()
    (out / "fusion_weights.json").write_text(json.dumps(weights, indent=1) + "\n")
    with open(out / "trajectory.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TRAJECTORY_FIELDS)
        writer.writeheader()
        writer.writerows(trajectory)
    return weights


# --- the stage ----------------------------------------------------------------------------


PROMPT_CHOICES = ("target_scenario", "first_n")
PROMPT_CHOICE = FusionSettings.prompt_choice  # the schema's default


def adaptation_prompts(
    instructions, scenario: str, adapt_on: str, n: int | None, choice: str = PROMPT_CHOICE
) -> list[list[dict]]:
    """The first n prompts of the split, without their answers: the assistant turn (the
    label) is dropped here and never reaches the objective.

    ``target_scenario`` (the paper's protocol) takes the prompts whose target is warm (cold)
    for the warm (cold) scenario: whether a target is cold is a property of the label, so
    that reads one bit of it per prompt. ``first_n`` reads nothing of the label: the first n
    prompts of the split whatever their target, the same for both scenarios."""
    rows = adaptation_rows(instructions, scenario, adapt_on, n, choice)
    return without_answers(rows["messages"].to_list())


def without_answers(conversations: list[list[dict]]) -> list[list[dict]]:
    """The conversations without their assistant turn (the label)."""
    return [
        [turn for turn in messages if turn["role"] != "assistant"] for messages in conversations
    ]


def load_mixture(base: str, adapters: list[str], settings: FusionSettings):
    """The base model (in model.precision) with the adapters mixed as the settings say."""
    from molorec.model import load_base, model_dtype

    cuda = torch.cuda.is_available()
    model, tokenizer = load_base(base, dtype=model_dtype(settings.precision, cuda))
    mixture = Mixture(
        model,
        [LoraAdapter.load(a) for a in adapters],
        settings.granularity,
        settings.activation,
        settings.temperature,
        guard_of(settings).floor,
        settings.merge_for_decoding,
    )
    if cuda:  # after wrapping: the mixing logits move with the layers
        mixture.to("cuda")
    return mixture, tokenizer


def run_lrs(
    base: str,
    adapters: list[str],
    instructions: str,
    scenario: str,
    out_dirs: dict[float, str | Path],
    settings: FusionSettings,
    progress: bool = False,
) -> list[dict]:
    """Every learning rate of a scenario's grid from one load of the base model: each
    starts from the same equal weights (theta reset to 0) and a fresh optimizer, so each
    result is the one a run of its own gives. ``out_dirs``: lr -> output folder; the
    prompts are the scenario's that the settings choose (n_prompts, adapt_on,
    prompt_choice)."""
    import polars as pl

    if settings.objective not in OBJECTIVES:
        raise ValueError(f"fusion objective {settings.objective!r}: {' | '.join(OBJECTIVES)}")
    mixture, tokenizer = load_mixture(base, adapters, settings)
    adapt_on, prompt_choice = settings.adapt_on, settings.prompt_choice
    rows = adaptation_rows(
        pl.read_parquet(instructions), scenario, adapt_on, settings.n_prompts, prompt_choice
    )
    supervised = settings.objective != "entropy"  # reads the labelled answers
    conversations = rows["messages"].to_list()
    prompts = without_answers(conversations)
    if not prompts:
        raise ValueError(f"{instructions}: no {adapt_on} prompts for the {scenario} scenario")
    infos, drafts = [], None
    for lr, out_dir in out_dirs.items():
        with torch.no_grad():
            mixture.mixing.theta.zero_()
        mixture.mixing.theta.grad = None
        lr_settings = replace(settings, lr=float(lr))
        if supervised:
            trajectory = adapt_supervised(mixture, tokenizer, conversations, lr_settings, progress)
        else:
            if drafts is None and settings.schedule == "pooled":  # every lr starts at theta 0
                drafts = draft_answers(mixture, tokenizer, prompts, settings.max_new_tokens)
            trajectory = adapt(mixture, tokenizer, prompts, lr_settings, progress, drafts=drafts)
        scored = sum(row["scored_tokens"] for row in trajectory)
        steps = trajectory[-1]["optimizer_steps"] if trajectory else 0
        if steps == 0:
            answered = sum(row["answer_tokens"] for row in trajectory)
            why = (
                f"no token of the {len(prompts)} greedy answers was scored ({answered} answer "
                "tokens in all)"
                if scored == 0
                else f"its {scored} scored tokens never completed an optimizer step "
                f"({lr_settings.tokens_per_backward} per backward x "
                f"{lr_settings.accumulation} backwards per step, schedule pooled)"
            )
            message = (
                f"fusion {scenario} lr {lr_settings.lr:g}: {why}: the mixing weights never "
                "moved, so this 'molorec' is the uniform mixture"
            )
            if lr_settings.require_signal:
                raise RuntimeError(message + " (fusion.require_signal is set)")
            log.warning(message)
        final = write_outputs(mixture, tokenizer, trajectory, out_dir)
        info = {
            "adapters": adapters,  # the order of every weight list
            "scenario": scenario,
            "adapt_on": adapt_on,
            "prompt_choice": prompt_choice,
            "objective": settings.objective,
            "labels_read": supervised,
            "prompts": len(prompts),
            "scored_tokens": scored,
            "optimizer_steps": steps,
            "learned": steps > 0,
            "collapsed_share": collapsed_share([w[0] for w in final.values()]),
            "settings": asdict(lr_settings),
        }
        (Path(out_dir) / "fusion_info.json").write_text(json.dumps(info, indent=1) + "\n")
        infos.append(info)
    return infos


def run_uniform(
    base: str, adapters: list[str], out_dir: str | Path, settings: FusionSettings
) -> None:
    """The mixture at its equal starting weights, exported like a learned one."""
    mixture, tokenizer = load_mixture(base, adapters, settings)
    write_outputs(mixture, tokenizer, [], out_dir)


def adaptation_rows(
    frame, scenario: str, adapt_on: str, n: int | None, choice: str = PROMPT_CHOICE
):
    """The rows of ``frame`` (instructions.parquet, or examples.parquet: the same rows in the
    same order) whose prompts fusion adapts on: the first n of the split, those of the
    scenario's targets under ``target_scenario``. Evaluation reads it too, to state and
    optionally remove its overlap with the evaluated examples."""
    import polars as pl

    if choice not in PROMPT_CHOICES:
        raise ValueError(f"fusion.prompt_choice {choice!r}: expected one of {PROMPT_CHOICES}")
    rows = frame.filter(pl.col("split") == adapt_on)
    if choice == "target_scenario":
        rows = rows.filter(pl.col("cold") == (scenario == "cold"))
    return rows if n is None else rows.head(n)
