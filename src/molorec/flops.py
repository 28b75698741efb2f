"""Model FLOPs per token, and the machine's own matrix-multiply rate at the model's shapes.

The benchmarks divide what a stage achieves (tokens/s x FLOPs per token) by what this
machine's ``torch.matmul`` does on the very shapes of the model's projections, measured in
the same run: a ratio that holds across machines where an absolute rate does not.

FLOPs are counted for decoder-only models with a gated MLP (Llama, Qwen2, Mistral,
SmolLM2): the seven projections of each layer, attention, and the LM head. A
multiply-add is 2 FLOPs. Per token, with N the projections' weights, R the LoRA weights,
c the number of positions a token attends to (causal: (n + 1) / 2 on average over a
sequence of n), d the attention width (heads x head size), L layers, V x h the head:

- forward: 2N + 2R + 4cdL, and 2Vh at a position whose logits are computed;
- LoRA training adds the backward: 2N + 2R through the frozen weights and the adapters'
  inputs, 2R for the adapters' weight gradients, 8cdL for attention, 2Vh at the positions
  of the loss. Frozen weights get no weight gradient.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Shapes:
    """The matrix shapes of a decoder layer, read from a transformers config."""

    hidden: int
    attention: int  # heads x head size: the width of q and of the attention output
    kv: int  # key/value heads x head size
    intermediate: int
    layers: int
    vocab: int

    @classmethod
    def of(cls, config) -> Shapes:
        needed = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers")
        missing = [k for k in needed if getattr(config, k, None) is None]
        if missing:
            raise ValueError(
                f"{type(config).__name__}: FLOPs are counted for gated-MLP decoders "
                f"(Llama, Qwen2, ...); the config has no {', '.join(missing)}"
            )
        heads = config.num_attention_heads
        head = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(
            hidden=config.hidden_size,
            attention=heads * head,
            kv=kv_heads * head,
            intermediate=config.intermediate_size,
            layers=config.num_hidden_layers,
            vocab=config.vocab_size,
        )

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer, by its usual name."""
        h, a, kv, m = self.hidden, self.attention, self.kv, self.intermediate
        return {
            "q_proj": (h, a),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (a, h),
            "gate_proj": (h, m),
            "up_proj": (h, m),
            "down_proj": (m, h),
        }

    def weights(self) -> int:
        """N: the projections' weights over all layers (no embedding, norms or head)."""
        return self.layers * sum(i * o for i, o in self.projections().values())

    def lora_weights(self, r: int) -> int:
        """R: LoRA weights of rank ``r`` on every projection."""
        return self.layers * sum(r * (i + o) for i, o in self.projections().values())


def forward_flops(s: Shapes, lora_r: int, context: float, logits_share: float) -> float:
    """FLOPs of one token's forward pass (see the module docstring)."""
    attention = 4 * context * s.attention * s.layers
    head = 2 * s.vocab * s.hidden * logits_share
    return 2 * s.weights() + 2 * s.lora_weights(lora_r) + attention + head


def train_flops(s: Shapes, lora_r: int, context: float, answer_share: float) -> float:
    """FLOPs of one token of a LoRA training step: forward and backward."""
    forward = forward_flops(s, lora_r, context, answer_share)
    backward = (
        2 * s.weights()
        + 4 * s.lora_weights(lora_r)
        + 8 * context * s.attention * s.layers
        + 2 * s.vocab * s.hidden * answer_share
    )
    return forward + backward


def causal_context(lengths: list[int]) -> float:
    """Mean number of positions a token attends to over sequences of these lengths."""
    return sum(n * (n + 1) / 2 for n in lengths) / sum(lengths)


def gemm_rate(s: Shapes, dtype, rows: int = 700, repeats: int = 5, device: str = "cpu") -> float:
    """This machine's FLOP/s for ``rows`` tokens through each projection of a layer
    (``torch.matmul``, the threads torch is set to, or a CUDA device): total FLOPs over
    the median times."""
    import torch

    gen = torch.Generator().manual_seed(0)
    cuda = device.startswith("cuda")

    def timed(x, w) -> float:
        if cuda:
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        torch.matmul(x, w)
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    total_flops, total_s = 0.0, 0.0
    for n_in, n_out in s.projections().values():
        x = torch.randn(rows, n_in, generator=gen).to(device, dtype)
        w = torch.randn(n_in, n_out, generator=gen).to(device, dtype)
        timed(x, w)  # warm-up: first-call allocation and kernel choice
        times = [timed(x, w) for _ in range(repeats)]
        total_s += sorted(times)[len(times) // 2]
        total_flops += 2 * rows * n_in * n_out
    return total_flops / total_s


def rank_flops(s: Shapes, prompt: int, candidates: list[int]) -> float:
    """FLOPs of ranking one example (molorec.predict.rank_candidates, adapter merged): the
    prompt's forward with logits at its last position, then the candidates packed after
    it, each token attending to the prompt and to its own title's earlier tokens, logits
    where a next title token is scored. Masked-out attention is not counted."""
    tokens = sum(candidates)
    context = prompt + causal_context(candidates)
    scored = sum(n - 1 for n in candidates)
    return prompt * forward_flops(s, 0, causal_context([prompt]), 1 / prompt) + tokens * (
        forward_flops(s, 0, context, scored / tokens)
    )


def gemm_rates(s: Shapes, rows: int, device: str = "cpu") -> dict[str, float]:
    """:func:`gemm_rate` in bf16 and in fp32, the two precisions a stage runs in. On a CPU
    without native bf16 only fp32: bf16 is emulated there (about 1 GFLOP/s), no stage runs
    in it, and a share of that rate would say nothing."""
    import torch

    from molorec.model import native_cpu_bf16

    precisions = [("fp32", torch.float32)]
    if device != "cpu" or native_cpu_bf16():
        precisions.insert(0, ("bf16", torch.bfloat16))
    return {name: gemm_rate(s, dtype, rows=rows, device=device) for name, dtype in precisions}
