"""Fusion: exact export, the entropy objective against the original scheme, behaviour."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import polars as pl
import pytest
import torch
from chat_data import TITLES, conversation, instructions
from safetensors.torch import load_file

from molorec.fusion import (
    adapt,
    adaptation_prompts,
    answer_entropy,
    chosen_positions,
    greedy_answers,
    greedy_continuation,
    greedy_from_draft,
    guard_of,
    run_lrs,
    separator_ids,
)
from molorec.mixture import LoraAdapter, Mixture
from molorec.model import load_base
from molorec.original import original_adaptation, original_gradient, original_greedy
from molorec.settings import FusionSettings, TrainSettings
from molorec.train import train


def random_adapter(base_path: str, out, r: int, alpha: int, seed: int) -> str:
    """A LoRA adapter with random, non-zero A and B (no training needed for exactness)."""
    from peft import LoraConfig, get_peft_model

    model, _ = load_base(base_path)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules="all-linear",
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(0.5)
    peft_model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def random_pair(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    # Different ranks and scalings: the export must handle both.
    return [random_adapter(tiny, root / "a", 4, 8, 1), random_adapter(tiny, root / "b", 8, 4, 2)]


def prompt(i: int) -> list[dict]:
    return conversation(i, "unused")[:-1]


def logits_of(model, tokenizer, messages) -> torch.Tensor:
    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        return model(**enc).logits


@pytest.mark.parametrize("granularity", ["module", "layer", "global"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_exported_adapter_reproduces_the_live_mixture(
    tiny, tokenizer, random_pair, tmp_path, granularity, activation
):
    from peft import PeftModel

    mixture = Mixture(
        load_base(tiny)[0],
        [LoraAdapter.load(p) for p in random_pair],
        granularity,
        activation,
        temperature=0.7,
    )
    with torch.no_grad():
        mixture.mixing.theta.copy_(torch.randn_like(mixture.mixing.theta))
    groups = {"module": len(mixture.stems), "layer": 2, "global": 1}[granularity]
    assert mixture.mixing.theta.shape == (groups, 2)
    out = mixture.export(tmp_path / "adapter")
    live = logits_of(mixture.model, tokenizer, prompt(0))
    exported = PeftModel.from_pretrained(load_base(tiny)[0], out).eval()
    torch.testing.assert_close(logits_of(exported, tokenizer, prompt(0)), live, rtol=0, atol=1e-5)

    # Recompute every layer's merged update from the adapters' own files and the weights.
    weights = mixture.effective_weights()
    merged = load_file(out / "adapter_model.safetensors")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 12 and config["lora_alpha"] == 12
    for stem, (w_a, w_b) in weights.items():
        delta = 0
        for path, w in zip(random_pair, (w_a, w_b), strict=True):
            cfg = json.loads((tmp_path.parent / path / "adapter_config.json").read_text())
            own = load_file(f"{path}/adapter_model.safetensors")
            s = cfg["lora_alpha"] / cfg["r"]
            delta = delta + w * s * own[f"{stem}.lora_B.weight"] @ own[f"{stem}.lora_A.weight"]
        got = merged[f"{stem}.lora_B.weight"] @ merged[f"{stem}.lora_A.weight"]
        torch.testing.assert_close(got, delta, rtol=1e-5, atol=1e-6)


def test_weights_one_zero_reproduce_the_general_adapter(tiny, tokenizer, random_pair):
    from peft import PeftModel

    mixture = Mixture(load_base(tiny)[0], [LoraAdapter.load(p) for p in random_pair])
    mixture.set_weights([1.0, 0.0])
    alone = PeftModel.from_pretrained(load_base(tiny)[0], random_pair[0]).eval()
    torch.testing.assert_close(
        logits_of(mixture.model, tokenizer, prompt(1)),
        logits_of(alone, tokenizer, prompt(1)),
        rtol=0,
        atol=1e-5,
    )


@pytest.mark.parametrize("merge", [False, True])
def test_decoding_follows_every_update_of_the_weights(tiny, tokenizer, random_pair, merge):
    """Without gradient a layer keeps its weights until theta changes (a column scale, or
    with merge_for_decoding the merged W + B diag(w s) A): its logits are those of the
    LoRA path with gradient, also after the logits move in place (an optimizer step, a
    reset); greedy answers are the same either way."""
    mixture = Mixture(
        load_base(tiny)[0], [LoraAdapter.load(p) for p in random_pair], merge_for_decoding=merge
    )
    enc = tokenizer.apply_chat_template(
        prompt(2), add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    theta = mixture.mixing.theta
    optimizer = torch.optim.Adam([theta], lr=2.0)
    for update in range(3):
        decoded = logits_of(mixture.model, tokenizer, prompt(2))
        lora_path = mixture.model(**enc).logits.detach()  # grad enabled: nothing kept
        torch.testing.assert_close(decoded, lora_path, rtol=0, atol=1e-5, msg=f"update {update}")
        theta.grad = torch.randn_like(theta)
        optimizer.step()
    assert float(mixture.mixing.weights()[:, 0].std()) > 0.01  # the weights really differ
    with torch.no_grad():
        theta.zero_()
    torch.testing.assert_close(
        logits_of(mixture.model, tokenizer, prompt(2)), mixture.model(**enc).logits.detach()
    )

    def answers(merged: bool) -> list[list[int]]:
        for layer in mixture.layers.values():
            layer.merge_for_decoding = merged
        return greedy_answers(mixture, tokenizer, [prompt(3), prompt(4)], 3, 24, set()).answers

    assert answers(merge) == answers(not merge)


def test_weights_follow_theta_through_the_activation_and_temperature(tiny, random_pair):
    """Hand-computed weights for a known theta: softmax(theta / T), sigmoid(theta) per
    adapter; a fresh mixture starts from equal weights."""
    adapters = [LoraAdapter.load(p) for p in random_pair]
    expected = {
        ("softmax", 0.5): [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)],
        ("softmax", 2.0): [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)],
        ("sigmoid", 1.0): [1 / (1 + math.exp(-1)), 0.5],
    }
    for (activation, temperature), weights in expected.items():
        mixture = Mixture(
            load_base(tiny)[0], adapters, activation=activation, temperature=temperature
        )
        assert all(w == pytest.approx([0.5, 0.5]) for w in mixture.effective_weights().values())
        with torch.no_grad():
            mixture.mixing.theta.copy_(torch.tensor([1.0, 0.0]).expand_as(mixture.mixing.theta))
        for w in mixture.effective_weights().values():
            assert w == pytest.approx(weights, abs=1e-6), (activation, temperature)


def test_separators_come_from_the_tokenizer(tokenizer):
    seps = separator_ids(tokenizer)
    assert set(tokenizer.encode("||", add_special_tokens=False)) <= seps
    assert all("||" in tokenizer.decode([i]) for i in seps)


def test_entropy_hand_computed():
    from molorec.fusion import entropy

    assert float(entropy(torch.zeros(4))) == pytest.approx(math.log(4))
    # p = (1/2, 1/4, 1/4): H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2.
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25])) + 3.0  # a shift changes nothing
    assert float(entropy(logits)) == pytest.approx(1.5 * math.log(2))
    assert float(entropy(torch.tensor([0.0, -1e4]))) == pytest.approx(0.0, abs=1e-6)


def test_first_k_tokens_of_every_title():
    sep, eos = 99, 100
    answer = [1, 2, 3, 4, sep, 5, 6, sep, 7, 8, 9, 10, eos, 11]
    # As the original: a separator (position 7) or a stop predicted within the first k
    # counts; the count restarts after the separator.
    assert chosen_positions(answer, 3, {sep}, {eos}) == [0, 1, 2, 5, 6, 7, 8, 9, 10]
    assert chosen_positions(answer, 1, {sep}, {eos}) == [0, 5, 8]
    assert chosen_positions([eos], 3, {sep}, {eos}) == [0]
    assert chosen_positions([1, eos, 2], 3, {sep}, {eos}) == [0, 1]


@pytest.mark.parametrize("granularity", ["module", "global"])
def test_gradient_equals_the_original_token_by_token_scheme(
    tiny, tokenizer, listing_pair, granularity
):
    mixture = Mixture(load_base(tiny)[0], [LoraAdapter.load(p) for p in listing_pair], granularity)
    torch.manual_seed(0)  # the same weights every run
    with torch.no_grad():
        mixture.mixing.theta.copy_(torch.randn_like(mixture.mixing.theta) * 0.3)
    prompts, k, max_new = [prompt(0), prompt(3)], 3, 24
    scored = greedy_answers(mixture, tokenizer, prompts, k, max_new, separator_ids(tokenizer))
    assert len(scored.rows) > 0
    # The answers hold separators: the restart after each title is exercised.
    assert all(set(a) & separator_ids(tokenizer) for a in scored.answers)
    mixture.mixing.theta.grad = None
    answer_entropy(mixture, scored).backward()
    ours = mixture.mixing.theta.grad.clone()
    reference = original_gradient(mixture, tokenizer, prompts, k, max_new)
    assert ours.abs().max() > 0
    # float32 sums in another order (cached vs recomputed): components far below the largest
    # may differ by 1e-4 of it.
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-4 * reference.abs().max().item())


# Tiny adapters that memorise a few answers: constant lr, no dropout, as many steps as given.
MEMORISING = TrainSettings(
    lr=1e-2,
    per_device_batch=4,
    grad_accum=1,
    warmup_ratio=0.0,
    save_every=0,
    epochs=1000,
    lora_dropout=0.0,
)


def listed(i: int) -> str:
    """A three-title answer: the separators make the per-title restart matter."""
    return "||".join(TITLES[(i + j) % len(TITLES)] for j in range(3))


@pytest.fixture(scope="module")
def listing_pair(tiny, tmp_path_factory):
    """Two adapters that answer with title lists (so greedy answers hold separators), one
    trained on the lists and one on their reverse: the mixture's answers depend on theta."""
    root = tmp_path_factory.mktemp("listing")
    s = replace(MEMORISING, max_steps=30)
    answers = {"A": listed, "B": lambda i: "||".join(reversed(listed(i).split("||")))}
    paths = []
    for name, answer in answers.items():
        data = instructions(root / f"{name}.parquet", 4, answer=answer)
        out, _ = train(tiny, [data], "domain", root / name, root / f"ck{name}", s, progress=False)
        paths.append(str(out))
    return paths


@pytest.mark.parametrize(
    ("batch", "accumulation", "wrong_drafts"),
    [(4, 2, False), (5, 3, False), (60, 1, False), (4, 2, True)],
)
def test_pooled_schedule_equals_the_original_step_by_step(
    tiny, tokenizer, listing_pair, batch, accumulation, wrong_drafts, monkeypatch
):
    """Scored tokens pooled across prompts, a backward per batch, a step per accumulation
    batches, the rest of an answer decoded with the new weights after a step inside it,
    the remainder never applied: theta after adaptation equals the original's loop's."""
    import molorec.fusion as fusion

    prompts, k, max_new, lr = [prompt(i) for i in range(3)], 3, 24, 5.0
    prefixes = []  # answer tokens fixed when the rest is decoded again after a step
    from_draft = fusion.greedy_from_draft

    def spy(mixture, ids, draft, decided, *args):
        prefixes.append(decided)
        return from_draft(mixture, ids, draft, decided, *args)

    monkeypatch.setattr(fusion, "greedy_from_draft", spy)

    def mixture() -> Mixture:
        return Mixture(load_base(tiny)[0], [LoraAdapter.load(p) for p in listing_pair])

    ours = mixture()
    s = FusionSettings(
        lr=lr,
        k=k,
        max_new_tokens=max_new,
        schedule="pooled",
        tokens_per_backward=batch,
        accumulation=accumulation,
    )
    # Drafts that are wrong from their first token: every answer is decoded afresh.
    trajectory = adapt(
        ours, tokenizer, prompts, s, drafts=[[0] * 5 for _ in prompts] if wrong_drafts else None
    )
    reference, reference_steps = original_adaptation(
        mixture(), tokenizer, prompts, k, max_new, batch, accumulation, lr
    )
    sep = separator_ids(tokenizer)
    answers = greedy_answers(mixture(), tokenizer, prompts, k, max_new, sep).answers
    assert all(set(a) & sep for a in answers)  # the restart after each title is exercised
    assert trajectory[-1]["optimizer_steps"] == reference_steps
    if batch == 60:  # fewer scored tokens than one batch: nothing is ever applied
        assert reference_steps == 0
        assert torch.equal(ours.mixing.theta.detach(), torch.zeros_like(reference))
    else:
        assert reference_steps >= 1 and any(prefixes)  # a step fell inside an answer
    # Adam divides by the gradients' scale, so float32 sums in another order (cached vs
    # recomputed) move theta by up to ~1e-4 of lr; a schedule off by one batch moves it by lr.
    torch.testing.assert_close(ours.mixing.theta.detach(), reference, rtol=0, atol=2e-3 * lr)


def test_a_checked_draft_is_the_greedy_answer(tiny, tokenizer, listing_pair):
    """Whatever the draft (right, wrong at a token, too short, too long, empty), the answer
    is the original's greedy answer under the current weights, and only the tokens of the
    draft up to its first disagreement are kept; the fixed prefix is never rewritten."""
    from molorec.predict import prompt_ids

    mixture = Mixture(load_base(tiny)[0], [LoraAdapter.load(p) for p in listing_pair])
    torch.manual_seed(0)
    with torch.no_grad():
        mixture.mixing.theta.copy_(torch.randn_like(mixture.mixing.theta) * 0.3)
    stop, max_new = {tokenizer.eos_token_id, tokenizer.pad_token_id}, 24
    for i in range(3):
        ids = prompt_ids(tokenizer, prompt(i))
        truth = original_greedy(mixture.model, ids, max_new, stop)
        assert len(truth) > 6
        other = next(t for t in range(5, 100) if t != truth[3])
        cases = {  # draft: tokens it must keep
            "right": (truth, len(truth)),
            "wrong at 3": (truth[:3] + [other] + truth[4:], 3),
            "short": (truth[:5], 5),
            "long": (truth[:-1] + [other] * 30, len(truth) - 1),
            "empty": ([], 0),
        }
        for name, (draft, kept) in cases.items():
            answer, n = greedy_from_draft(mixture, ids, draft, 0, max_new, stop)
            assert (answer, n) == (truth, kept), name
        # a fixed prefix (tokens decided under earlier weights) stays, even if not greedy
        fixed = [other] + truth[1:]
        answer, n = greedy_from_draft(mixture, ids, fixed, 1, max_new, stop)
        assert answer[0] == other and n <= len(truth) - 1
        assert answer == [other] + original_greedy(mixture.model, ids + [other], max_new - 1, stop)


def test_decoding_past_a_disagreement_checks_guesses_copied_from_the_prompt(
    tiny, tokenizer, listing_pair, monkeypatch
):
    """The answer decoded with prompt lookup is the original's greedy answer, and, as the
    answer copies candidate titles from its prompt, it takes fewer forward passes than it
    has tokens; token by token (LOOKUP_TOKENS = 0) takes one pass per token."""
    import molorec.fusion as fusion
    from molorec.predict import prompt_ids

    mixture = Mixture(load_base(tiny)[0], [LoraAdapter.load(p) for p in listing_pair])
    torch.manual_seed(0)
    with torch.no_grad():
        mixture.mixing.theta.copy_(torch.randn_like(mixture.mixing.theta) * 0.3)
    passes = []
    mixture.model.register_forward_hook(lambda *_: passes.append(1))
    stop, max_new = {tokenizer.eos_token_id, tokenizer.pad_token_id}, 24
    for i in range(3):
        ids = prompt_ids(tokenizer, prompt(i))
        truth = original_greedy(mixture.model, ids, max_new, stop)
        for guesses in (fusion.LOOKUP_TOKENS, 0):
            monkeypatch.setattr(fusion, "LOOKUP_TOKENS", guesses)
            passes.clear()
            assert greedy_continuation(mixture, ids, [], max_new, stop) == truth, guesses
            if guesses:
                assert len(passes) < len(truth) / 2, (len(passes), len(truth))
            else:
                assert len(passes) == len(truth)


def course_conversation(i: int, answer: str) -> list[dict]:
    """Set Y: another domain's template, so adapter B is unsure on set X's prompts."""
    return [
        {"role": "system", "content": "你是一个课程推荐助手。"},
        {"role": "user", "content": f"学生 {i} 学过《{TITLES[(i + 2) % 6]}》。请推荐下一门课程："},
        {"role": "assistant", "content": answer},
    ]


@pytest.fixture(scope="module")
def memorised_pair(tiny, tmp_path_factory):
    """Adapter A memorised answers on prompts X, adapter B on prompts Y."""
    root = tmp_path_factory.mktemp("memorised")
    s = replace(MEMORISING, max_steps=120)
    sets = {
        "A": [conversation(i, TITLES[i]) for i in range(4)],
        "B": [course_conversation(i, TITLES[(i + 3) % 6]) for i in range(4)],
    }
    paths = []
    for name, convs in sets.items():
        rows = [
            {
                "domain": "d",
                "user": f"U{i}",
                "split": "train",
                "position": 1,
                "target": "t",
                "cold": False,
                "held_out": False,
                "messages": c,
            }
            for i, c in enumerate(convs)
        ]
        pl.DataFrame(rows).write_parquet(root / f"{name}.parquet")
        out, _ = train(
            tiny,
            [str(root / f"{name}.parquet")],
            "domain",
            root / name,
            root / f"ck{name}",
            s,
            progress=False,
        )
        paths.append(str(out))
    return paths


def test_adapting_on_x_moves_weight_towards_the_adapter_that_knows_x(
    tiny, tokenizer, memorised_pair
):
    mixture = Mixture(load_base(tiny)[0], [LoraAdapter.load(p) for p in memorised_pair])
    start = torch.tensor(list(mixture.effective_weights().values()))[:, 0].mean()
    s = FusionSettings(lr=0.5, steps=3, k=3, max_new_tokens=16, schedule="prompt")
    trajectory = adapt(mixture, tokenizer, [prompt(i) for i in range(4)], s)
    end = torch.tensor(list(mixture.effective_weights().values()))[:, 0].mean()
    assert start == pytest.approx(0.5)
    assert end > start + 0.2, trajectory
    # The same with the adapters in the other order: the weight follows the adapter.
    swapped = Mixture(load_base(tiny)[0], [LoraAdapter.load(p) for p in memorised_pair[::-1]])
    adapt(swapped, tokenizer, [prompt(i) for i in range(4)], s)
    assert torch.tensor(list(swapped.effective_weights().values()))[:, 1].mean() > start + 0.2


def test_labels_of_adaptation_prompts_are_never_read(tiny, random_pair, tmp_path):
    """Under the label-free prompt choice (first_n), everything of the label differs
    between the two sets (the target, the answer, whether the target is cold) and the
    fusion outputs are byte-identical. (target_scenario reads the cold bit by design:
    test_first_n_prompts_read_nothing_of_the_label.)"""
    data = pl.read_parquet(instructions(tmp_path / "d.parquet", 6, split="test"))
    scrambled = data.with_columns(
        target=pl.lit("nothing"),
        cold=~pl.col("cold"),
        messages=pl.Series([conversation(i, "Scrambled||answer") for i in range(6)]),
    )
    data.write_parquet(tmp_path / "true.parquet")
    scrambled.write_parquet(tmp_path / "scrambled.parquet")
    s = FusionSettings(lr=1.0, k=2, max_new_tokens=8, tokens_per_backward=2, accumulation=1)
    s = replace(s, adapt_on="test", n_prompts=3, prompt_choice="first_n")
    for name in ("true", "scrambled"):
        run_lrs(
            tiny, random_pair, str(tmp_path / f"{name}.parquet"), "warm", {1.0: tmp_path / name}, s
        )
    assert (tmp_path / "true/fusion_weights.json").read_bytes() == (
        tmp_path / "scrambled/fusion_weights.json"
    ).read_bytes()
    assert (tmp_path / "true/trajectory.csv").read_text() == (
        tmp_path / "scrambled/trajectory.csv"
    ).read_text()
    a = load_file(tmp_path / "true/adapter/adapter_model.safetensors")
    b = load_file(tmp_path / "scrambled/adapter/adapter_model.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)
    learned = json.loads((tmp_path / "true/fusion_weights.json").read_text())
    assert any(abs(w[0] - 0.5) > 1e-3 for w in learned.values())  # it did learn
    # The labels differ, the prompts adapted on are the same.
    assert data["messages"].to_list() != scrambled["messages"].to_list()
    assert data["cold"].to_list() != scrambled["cold"].to_list()
    seen = [adaptation_prompts(frame, "warm", "test", 3, "first_n") for frame in (data, scrambled)]
    assert len(seen[0]) == 3 and seen[0] == seen[1]


def test_first_n_prompts_read_nothing_of_the_label(tmp_path):
    data = pl.read_parquet(instructions(tmp_path / "d.parquet", 6, split="test"))
    cold = data.with_columns(cold=pl.Series([True, False, True, False, False, True]))
    flipped = cold.with_columns(cold=~pl.col("cold"))
    # The paper's choice: the hidden target's scenario picks the prompts.
    assert adaptation_prompts(cold, "cold", "test", 2) != adaptation_prompts(
        flipped, "cold", "test", 2
    )
    for scenario in ("warm", "cold"):
        picked = [adaptation_prompts(f, scenario, "test", 2, "first_n") for f in (cold, flipped)]
        assert picked[0] == picked[1] == adaptation_prompts(data, "warm", "test", 2, "first_n")
    with pytest.raises(ValueError, match="prompt_choice"):
        adaptation_prompts(data, "warm", "test", 2, "by_label")


def test_tokens_per_step_splits_a_prompt_into_several_optimizer_steps(tiny, tokenizer, random_pair):
    mixture = Mixture(load_base(tiny)[0], [LoraAdapter.load(p) for p in random_pair])
    s = FusionSettings(
        lr=0.1, steps=1, k=3, max_new_tokens=12, schedule="prompt", tokens_per_step=2
    )
    trajectory = adapt(mixture, tokenizer, [prompt(0)], s)
    scored = [t["scored_tokens"] for t in trajectory]
    assert len(trajectory) > 1 and all(n <= 2 for n in scored) and sum(scored) > 2


def test_an_adapter_of_another_base_model_is_refused_by_name(tiny, tmp_path):
    from molorec.model import build_tiny_qwen2

    wider = build_tiny_qwen2(tmp_path / "wider", hidden_size=96)
    other = LoraAdapter.load(random_adapter(str(wider), tmp_path / "other", 4, 8, 3))
    model, _ = load_base(tiny)
    with pytest.raises(
        ValueError,
        match=r"other: model\.layers\.0\..*do not fit the base layer.*another base model",
    ):
        Mixture(model, [other])


def test_weight_entropy_and_collapsed_share_on_hand_computed_values():
    from molorec.mixture_stats import collapsed_share, weight_entropy

    assert weight_entropy([[0.5, 0.5]]) == pytest.approx(0.693147, abs=1e-6)
    assert weight_entropy([[1.0, 0.0], [0.5, 0.5]]) == pytest.approx(0.346574, 1e-5)
    assert collapsed_share([0.005, 0.5, 0.995, 0.99]) == 0.5
    assert collapsed_share([]) == 0.0


@pytest.mark.parametrize(("guard", "strength"), [("l2", 1.0), ("floor", 0.2)])
def test_guards_hold_the_mixture_back_from_collapse(tiny, tokenizer, random_pair, guard, strength):
    """At a large lr the paper's objective drives weights far from equal; each guard keeps
    them closer (l2) or inside [strength, 1 - strength] (floor)."""

    def spread(s: FusionSettings) -> torch.Tensor:
        mixture = Mixture(
            load_base(tiny)[0], [LoraAdapter.load(p) for p in random_pair], floor=guard_of(s).floor
        )
        adapt(mixture, tokenizer, [prompt(i) for i in range(4)], s)
        return torch.tensor([w[0] for w in mixture.effective_weights().values()])

    free = spread(FusionSettings(lr=5.0, k=3, max_new_tokens=12, schedule="prompt"))
    guarded = spread(
        FusionSettings(
            lr=5.0,
            k=3,
            max_new_tokens=12,
            schedule="prompt",
            guard=guard,
            guard_strength=strength,
        )
    )
    assert (free - 0.5).abs().max() > 0.3
    assert (guarded - 0.5).abs().mean() < (free - 0.5).abs().mean()
    if guard == "floor":
        assert guarded.min() >= strength - 1e-6 and guarded.max() <= 1 - strength + 1e-6


def test_floor_keeps_exported_weights_and_set_weights_consistent(tiny, random_pair):
    mixture = Mixture(load_base(tiny)[0], [LoraAdapter.load(p) for p in random_pair], floor=0.1)
    mixture.set_weights([0.7, 0.3])
    assert all(
        w == pytest.approx([0.7, 0.3], abs=1e-5) for w in mixture.effective_weights().values()
    )


def test_a_run_that_scores_nothing_warns_or_fails(tiny, random_pair, tmp_path, monkeypatch, caplog):
    import molorec.fusion as fusion

    data = instructions(tmp_path / "d.parquet", 2, split="test")
    monkeypatch.setattr(fusion, "chosen_positions", lambda *args: [])  # no title token found
    s = FusionSettings(lr=1.0, k=2, max_new_tokens=4, adapt_on="test", n_prompts=2)
    info = run_lrs(tiny, random_pair, data, "warm", {1.0: tmp_path / "warned"}, s)[0]
    assert info["scored_tokens"] == 0 and info["learned"] is False
    assert "the mixing weights never moved" in caplog.text
    weights = json.loads((tmp_path / "warned/fusion_weights.json").read_text())
    assert all(w == pytest.approx([0.5, 0.5]) for w in weights.values())
    s.require_signal = True
    with pytest.raises(RuntimeError, match="fusion.require_signal"):
        run_lrs(tiny, random_pair, data, "warm", {1.0: tmp_path / "failed"}, s)


# --- one model load for many runs (README: Evaluation jobs) --------------------------------


def test_every_lr_from_one_load_equals_a_load_per_lr(tiny, tokenizer, random_pair, tmp_path):
    """run_lrs adapts every lr on one loaded mixture: each lr must start again from equal
    weights and a fresh optimizer. Against a fresh load and a plain adapt() per lr."""
    data = instructions(tmp_path / "d.parquet", 4, split="test")
    s = FusionSettings(
        k=2,
        max_new_tokens=8,
        tokens_per_backward=2,
        accumulation=1,
        adapt_on="test",
        n_prompts=3,
        precision="fp32",  # as the float32 load below (auto is bf16 on a native-bf16 CPU)
    )
    lrs = {0.5: tmp_path / "grouped/lr0.5", 2.0: tmp_path / "grouped/lr2"}
    run_lrs(tiny, random_pair, data, "warm", lrs, s)
    prompts = adaptation_prompts(pl.read_parquet(data), "warm", "test", 3)
    for lr, folder in lrs.items():
        alone = Mixture(load_base(tiny)[0], [LoraAdapter.load(p) for p in random_pair])
        trajectory = adapt(alone, tokenizer, prompts, replace(s, lr=lr))
        grouped = json.loads((folder / "fusion_weights.json").read_text())
        assert trajectory[-1]["optimizer_steps"] > 0
        for stem, w in alone.effective_weights().items():
            assert grouped[stem] == pytest.approx(w, abs=1e-6), (lr, stem)
    # The two lrs did learn different weights: the second did not start from the first's.
    assert (lrs[0.5] / "fusion_weights.json").read_bytes() != (
        lrs[2.0] / "fusion_weights.json"
    ).read_bytes()


@pytest.mark.parametrize("backend", ["rank", "generate"])
def test_every_variant_from_one_load_equals_a_load_per_variant(
    tiny, random_pair, tmp_path, backend
):
    from molorec.evaluate import predict_variants

    data = pl.read_parquet(instructions(tmp_path / "d.parquet", 3, split="test"))
    titles = {f"I{i}": t for i, t in enumerate(TITLES)}
    rows = data.with_columns(
        candidates=pl.lit([f"I{i}" for i in range(len(TITLES))]), target=pl.lit("I0")
    )
    s = {"backend": backend, "max_new_tokens": 12, "batch_size": 2, "normalised_match": False}
    adapters = {"base": None, "a": random_pair[0], "b": random_pair[1], "base again": None}
    grouped = dict(predict_variants(tiny, adapters, rows, titles, s))
    assert list(grouped) == list(adapters)
    for variant, adapter in adapters.items():
        alone = dict(predict_variants(tiny, {variant: adapter}, rows, titles, s))[variant]
        assert grouped[variant].equals(alone), variant
    assert grouped["base"].equals(grouped["base again"])  # the base weights came back exactly
    if backend == "rank":  # the adapters do change the model
        assert not grouped["a"].equals(grouped["base"])


def test_vllm_requests_give_every_adapter_its_own_name_and_id(random_pair, tmp_path):
    from molorec.evaluate import lora_requests

    fused = tmp_path / "fusion/lr1"
    (fused / "adapter").mkdir(parents=True)
    adapters = {
        "base": None,
        "general": random_pair[0],
        "domain": random_pair[1],
        "lr1": str(fused),
    }
    requests = lora_requests(adapters)
    assert requests["base"] is None
    loras = [r for r in requests.values() if r]
    assert len({r[0] for r in loras}) == len({r[1] for r in loras}) == 3
    assert all(r[1] >= 1 for r in loras)  # vLLM reserves id 0
    assert requests["lr1"][2] == str(fused / "adapter")  # a fusion folder's PEFT adapter
    # One engine for all: room for the three adapters, a rank limit that holds the largest.
    (fused / "adapter/adapter_config.json").write_text('{"r": 12}')  # a fused 4 + 8
    from molorec.evaluate import vllm_engine_args

    assert vllm_engine_args(requests) == {"enable_lora": True, "max_loras": 3, "max_lora_rank": 16}
    assert vllm_engine_args({"base": None})["enable_lora"] is False


def test_the_schema_offers_exactly_the_registered_guards_and_schedules():
    """fusion.guard and fusion.schedule name what molorec.fusion registers: a GUARDS entry
    is one guard more, listed in the schema's enum."""
    from molorec.fusion import GUARDS, OBJECTIVES, SCHEDULES, Guard
    from molorec.schema import load_schema

    fusion = load_schema()["properties"]["fusion"]["properties"]
    assert fusion["guard"]["enum"] == list(GUARDS)
    assert fusion["schedule"]["enum"] == list(SCHEDULES)
    assert all(isinstance(GUARDS[name](0.1), Guard) for name in GUARDS)
    assert "entropy" in OBJECTIVES  # the paper's objective, the default of adapt()


def test_the_supervised_objective_is_the_training_loss(tiny, tokenizer, random_pair):
    """answer_nll over every answer token of a labelled example is the trainer's loss of the
    same mixture on the same encoding (molorec.train.answer_loss): the label's tokens are
    the targets, each predicted from the position before it."""
    from molorec.fusion import answer_nll, sequence_positions
    from molorec.train import answer_loss, collate, encode

    mixture = Mixture(load_base(tiny)[0], [LoraAdapter.load(p) for p in random_pair])
    (e,), _ = encode(tokenizer, [conversation(1, f"{TITLES[2]}||{TITLES[4]}")], 1 << 30)
    ids, answer = e.input_ids[: e.n_prompt], e.input_ids[e.n_prompt :]
    scored = sequence_positions(ids, answer, list(range(len(answer))), "cpu")
    with torch.no_grad():
        ours = answer_nll(mixture, scored)
        total, count = answer_loss(mixture.model, collate([e], tokenizer.pad_token_id, "cpu"))
    assert len(ours) == count == len(answer)
    assert float(ours.sum()) == pytest.approx(float(total), rel=1e-5)


def test_supervised_adaptation_fits_the_labelled_answers(tiny, tokenizer, random_pair, tmp_path):
    """The molorec_supervised control: run_lrs with the answer_nll objective reads the
    assistant turns of the selection set and lowers their loss; fusion_info says so."""
    data = instructions(tmp_path / "d.parquet", 4, split="val")
    s = FusionSettings(adapt_on="val", n_prompts=4, objective="answer_nll", steps=3)
    (info,) = run_lrs(tiny, random_pair, data, "warm", {1.0: tmp_path / "lr1"}, s)
    assert info["labels_read"] and info["objective"] == "answer_nll"
    # 4 examples x 3 passes, a backward each and a step per accumulation (4) of them
    assert info["optimizer_steps"] == 3

    # The same 4 examples in every pass: the third pass's losses are below the first's.
    losses = pl.read_csv(tmp_path / "lr1/trajectory.csv")["loss"].to_list()
    assert len(losses) == 12 and sum(losses[8:]) < sum(losses[:4])
