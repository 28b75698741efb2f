"""molorec.flops against the model itself: its weights, and torch's own FLOP counter."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from molorec.flops import Shapes, causal_context, forward_flops, train_flops
from molorec.train import TrainSettings, lora_config


def lora_model(tiny):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    # Eager attention computes the full n x n scores, as the count with context = n does.
    model = AutoModelForCausalLM.from_pretrained(tiny, attn_implementation="eager")
    model.enable_input_require_grads()  # every layer's input gradient, as the count has it
    torch.manual_seed(0)
    return get_peft_model(model, lora_config(TrainSettings(lora_dropout=0.0)))


def test_weights_are_those_of_the_model(tiny):
    model = lora_model(tiny)
    shapes = Shapes.of(model.config)
    projections = tuple(shapes.projections())
    base = sum(
        p.numel()
        for n, p in model.named_parameters()
        if "base_layer.weight" in n and n.split(".")[-3] in projections
    )
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert shapes.weights() == base and shapes.lora_weights(16) == lora


def test_train_and_forward_flops_match_torch_s_counter(tiny):
    model = lora_model(tiny)
    shapes, n, scored = Shapes.of(model.config), 40, 7
    ids = torch.randint(0, 1000, (1, n))
    keep = torch.zeros(1, n, dtype=torch.bool)
    keep[0, n - scored - 1 : n - 1] = True
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=ids, logits_to_keep=keep).logits
        logits.float().logsumexp(-1).sum().backward()
    expected = train_flops(shapes, 16, context=n, answer_share=scored / n) * n
    assert counter.get_total_flops() == pytest.approx(expected, rel=1e-9)

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, logits_to_keep=keep)
    expected = forward_flops(shapes, 16, context=n, logits_share=scored / n) * n
    assert counter.get_total_flops() == pytest.approx(expected, rel=1e-9)


def test_causal_context_is_the_mean_attended_length():
    # Positions of a 3-token sequence attend to 1, 2 and 3 positions; of a 1-token one, 1.
    assert causal_context([3, 1]) == pytest.approx((1 + 2 + 3 + 1) / 4)


def test_a_config_without_a_gated_mlp_is_refused():
    from transformers import GPT2Config

    with pytest.raises(ValueError, match="GPT2Config.*intermediate_size"):
        Shapes.of(GPT2Config())


@pytest.mark.parametrize("native", [True, False])
def test_a_cpu_without_native_bf16_gets_no_bf16_rate(monkeypatch, native):
    """Emulated bf16 runs at about 1 GFLOP/s: a share of it would say nothing, and no
    stage runs in it there (precision auto is fp32)."""
    from molorec import model
    from molorec.flops import gemm_rates

    monkeypatch.setattr(model, "native_cpu_bf16", lambda: native)
    shapes = Shapes(hidden=32, attention=32, kv=16, intermediate=64, layers=2, vocab=100)
    rates = gemm_rates(shapes, rows=8)
    assert list(rates) == (["bf16", "fp32"] if native else ["fp32"])
    assert all(r > 0 for r in rates.values())
