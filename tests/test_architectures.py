"""Causal LMs other than Qwen2: train, fuse and rank with tiny random models built here.

Each names its parts otherwise than Qwen2 (body ``model``, head ``lm_head``), so code that
reaches into a model's attributes fails on it:

- GPT-2: body ``transformer``, blocks ``h``; attention and MLP are transformers' Conv1D
  (weights stored transposed), not nn.Linear; learned absolute positions.
- GPT-NeoX: body ``gpt_neox``, fused ``query_key_value``, rotary positions, an untied head.
- BioGPT: body ``biogpt``, head ``output_projection`` (no ``lm_head`` at all).

All use tiny-qwen2's tokenizer (the real Qwen tokenizer and chat template), so the chat
data and the candidate titles are those of the other tests.
"""

from __future__ import annotations

import copy
import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import pytest
import torch
from chat_data import TITLES, conversation, instructions
from safetensors.torch import load_file

from molorec.model import EMBED_SCALE
from molorec.predict import candidate_ids, prompt_ids, rank_brute_force, rank_candidates
from molorec.schema import load_schema
from molorec.train import TrainSettings, answer_loss, collate, encode, full_logits_loss, train

SHAPES = {
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=2, n_positions=512)),
    "gpt_neox": (
        "GPTNeoXConfig",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        ),
    ),
    "biogpt": (
        "BioGptConfig",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        ),
    ),
}
ARCHITECTURES = list(SHAPES)


def build(name: str, tokenizer, out: Path) -> str:
    """A seeded random model of the architecture with tiny-qwen2's tokenizer, saved as an
    HF folder that load_base reads like any other."""
    import transformers
    from transformers import AutoModelForCausalLM

    config_class, shape = SHAPES[name]
    config = getattr(transformers, config_class)(
        vocab_size=(len(tokenizer) + 127) // 128 * 128,  # as tiny-qwen2: a multiple of 128
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    # As tiny-qwen2: the default 0.02 init keeps every logit near 0 in a 32-wide model, so
    # nothing could be learned in a few steps; wider embeddings (and head) let it learn.
    with torch.no_grad():
        for layer in {model.get_input_embeddings(), model.get_output_embeddings()}:
            layer.weight.normal_(0.0, EMBED_SCALE / config.hidden_size)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def settings(**kw) -> TrainSettings:
    base = dict(
        lr=1e-2,
        per_device_batch=4,
        grad_accum=1,
        max_steps=10,
        warmup_ratio=0.0,
        save_every=0,
        epochs=100,
        lora_dropout=0.0,
    )
    return TrainSettings(**(base | kw))


@pytest.fixture(scope="module")
def qwen_tokenizer(tiny):
    """tiny-qwen2's tokenizer, loaded once here (others change a shared one's padding side)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


@dataclass
class Built:
    base: str
    adapters: list[str]  # a random one (as the general adapter), the trained domain one
    trained: object  # the PeftModel train() returned
    plain: object  # the base model as saved, without adapters


def random_adapter(plain, out: Path) -> str:
    """A LoRA adapter of another rank with random, non-zero A and B (no training)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules="all-linear",
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    get_peft_model(copy.deepcopy(plain), config).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def built(qwen_tokenizer, tmp_path_factory):
    """name -> Built: a base model and two adapters on it, built once."""
    from transformers import AutoModelForCausalLM

    cache = {}

    def get(name: str) -> Built:
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            base = build(name, qwen_tokenizer, root / "base")
            data = instructions(root / "domain.parquet", 4)
            out, trained = train(
                base, [data], "domain", root / "domain", root / "ck", settings(), progress=False
            )
            plain = AutoModelForCausalLM.from_pretrained(base).eval()
            adapters = [random_adapter(plain, root / "general"), str(out)]
            cache[name] = Built(base, adapters, trained.eval(), plain)
        return cache[name]

    return get


def candidate_rows(n: int) -> tuple[pl.DataFrame, dict[str, str]]:
    """Evaluation rows (every title a candidate) and the titles by item id."""
    titles = {f"I{j}": t for j, t in enumerate(TITLES)}
    rows = pl.DataFrame(
        {
            "user": [f"U{i}" for i in range(n)],
            "target": [f"I{i}" for i in range(n)],
            "candidates": [list(titles)] * n,
            "messages": [conversation(i, TITLES[i]) for i in range(n)],
        }
    )
    return rows, titles


def eval_settings(**kw) -> dict:
    """evaluate: settings at the schema's defaults."""
    props = load_schema()["properties"]["evaluate"]["properties"]
    defaults = {k: v["default"] for k, v in props.items() if "default" in v}
    return defaults | {"precision": "fp32"} | kw


def read_losses(adapter: str) -> list[float]:
    with open(Path(adapter) / "train_log.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def adapted_layers(model) -> set[str]:
    """The adapter key stems of a LoRA on every linear layer of the body: nn.Linear, or
    Conv1D (GPT-2)."""
    from transformers.pytorch_utils import Conv1D

    prefix = f"base_model.model.{model.base_model_prefix}"
    return {
        f"{prefix}.{n}"
        for n, m in model.base_model.named_modules()
        if isinstance(m, (torch.nn.Linear, Conv1D))
    }


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_trains_a_lora_adapter(built, qwen_tokenizer, name):
    b = built(name)
    # The trainer's loss (logits at answer positions only), through the PeftModel it trains,
    # is the usual full-logits loss.
    convs = [conversation(i, "||".join(TITLES[i : i + 3])) for i in range(3)]
    batch = collate(encode(qwen_tokenizer, convs, 512)[0], qwen_tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        ours, n = answer_loss(b.trained, batch)
        reference = full_logits_loss(b.trained, batch)
    assert n == int(batch["answer"][:, 1:].sum()) > 0
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-4)

    adapter = b.adapters[1]
    losses = read_losses(adapter)
    assert len(losses) == 10 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    stems = {k.rsplit(".lora_", 1)[0] for k in load_file(f"{adapter}/adapter_model.safetensors")}
    # Every linear layer of the body is adapted (GPT-2: its Conv1D layers), not the head.
    assert stems == adapted_layers(b.plain)
    head = b.plain.get_output_embeddings()
    assert head not in {b.plain.get_submodule(s.removeprefix(PEFT)) for s in stems}


PEFT = "base_model.model."


def rank_scores(model, tokenizer, messages, exact: bool = False) -> torch.Tensor:
    """Every title's score as a candidate of the prompt, as the rank backend scores it."""
    prompt, cands = prompt_ids(tokenizer, messages), candidate_ids(tokenizer, TITLES)
    scores = rank_candidates(model, prompt, cands)
    if exact:  # the packed, cached scoring (a 4D mask, positions restarted per candidate)
        torch.testing.assert_close(scores, rank_brute_force(model, prompt, cands))
    return scores


def rank_order(model, tokenizer, messages, exact: bool = False) -> list[str]:
    """The candidate ids (every title) best first."""
    scores = rank_scores(model, tokenizer, messages, exact)
    return [f"I{j}" for j in torch.argsort(scores, descending=True, stable=True).tolist()]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_ranks_candidates_with_and_without_an_adapter(built, qwen_tokenizer, name):
    from molorec.evaluate import predict_variants

    b = built(name)
    rows, titles = candidate_rows(2)
    variants = {"base": None, "domain": b.adapters[1]}
    got = dict(predict_variants(b.base, variants, rows, titles, eval_settings(backend="rank")))
    for variant, model in (("base", b.plain), ("domain", b.trained)):
        # On this architecture too, the packed scoring is a plain forward per candidate.
        exact = variant == "domain"
        expected = [rank_order(model, qwen_tokenizer, m, exact) for m in rows["messages"][:1]]
        expected += [rank_order(model, qwen_tokenizer, m) for m in rows["messages"][1:]]
        assert got[variant]["ranking"].to_list() == expected, variant
    # The adapter changed the model: the base ranks otherwise.
    assert got["base"]["ranking"].to_list() != got["domain"]["ranking"].to_list()


# MixtureLinear wraps nn.Linear only: GPT-2's Conv1D layers are refused, naming the layer.
FUSABLE = [
    pytest.param("gpt2", marks=pytest.mark.xfail(raises=ValueError, strict=True, reason="Conv1D")),
    *(a for a in ARCHITECTURES if a != "gpt2"),
]


@pytest.mark.parametrize("name", FUSABLE)
def test_fuses_two_adapters_and_ranks_with_the_mixture(built, qwen_tokenizer, name, tmp_path):
    from peft import PeftModel

    from molorec.fusion import FusionSettings, LoraAdapter, Mixture, run_lrs

    b = built(name)
    # The export is exact on this architecture: random weights, the adapter reloaded by peft.
    mixture = Mixture(copy.deepcopy(b.plain), [LoraAdapter.load(a) for a in b.adapters])
    with torch.no_grad():
        mixture.mixing.theta.copy_(torch.randn_like(mixture.mixing.theta))
    exported = mixture.export(tmp_path / "x")
    reloaded = PeftModel.from_pretrained(copy.deepcopy(b.plain), exported).eval()
    enc = qwen_tokenizer.apply_chat_template(
        conversation(0, "")[:-1], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        live = mixture.model(**enc).logits
        torch.testing.assert_close(reloaded(**enc).logits, live, rtol=0, atol=1e-5)

    # Adaptation on unlabeled prompts moves the weights; the fused adapter then ranks.
    # A step per 2 scored tokens: 2 short answers make steps under the pooled schedule.
    settings = FusionSettings(max_new_tokens=12, tokens_per_backward=2, accumulation=1)
    [info] = run_lrs(
        base=b.base,
        adapters=b.adapters,
        instructions=instructions(tmp_path / "val.parquet", 2, split="val"),
        scenario="warm",
        out_dirs={1.0: tmp_path / "fused"},
        settings=replace(settings, adapt_on="val", n_prompts=2),
    )
    assert info["scored_tokens"] > 0
    weights = json.loads((tmp_path / "fused" / "fusion_weights.json").read_text())
    assert any(abs(w[0] - 0.5) > 1e-3 for w in weights.values())
    fused = PeftModel.from_pretrained(copy.deepcopy(b.plain), tmp_path / "fused" / "adapter")
    messages = conversation(0, TITLES[0])
    scores = rank_scores(fused.eval(), qwen_tokenizer, messages)
    assert scores.isfinite().all()
    assert not torch.allclose(scores, rank_scores(b.plain, qwen_tokenizer, messages))
