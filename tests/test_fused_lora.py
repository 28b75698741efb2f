"""molorec.fused_lora: LoRA's B product, scaling and add as one addmm, against peft's own."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from chat_data import instructions

from molorec.dropout import use_sparse_dropout
from molorec.fused_lora import use_fused_lora
from molorec.model import load_base
from molorec.train import TrainSettings, answer_loss, collate, encode, lora_config, train


def lora_model(tiny, dtype, dropout=0.0):
    from peft import get_peft_model

    model, tokenizer = load_base(tiny, dtype=dtype)
    torch.manual_seed(0)
    model = get_peft_model(model, lora_config(TrainSettings(lora_dropout=dropout)))
    if dropout:
        use_sparse_dropout(model)
    with torch.no_grad():  # B nonzero, so the LoRA path carries value and gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
    return model, tokenizer


def loss_and_grads(model, batch, bf16):
    from peft.helpers import disable_input_dtype_casting

    model.zero_grad()
    torch.manual_seed(7)  # the dropout masks: drawn from torch's generator on both paths
    with disable_input_dtype_casting(model, active=bf16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, n = answer_loss(model, batch)
        (loss / n).backward()
    grads = {k: p.grad.float().clone() for k, p in model.named_parameters() if p.requires_grad}
    return float(loss / n), grads


@pytest.fixture(scope="module")
def batch(tiny, tokenizer, tmp_path_factory):
    path = instructions(tmp_path_factory.mktemp("fused") / "d.parquet", 4)
    examples, _ = encode(tokenizer, pl.read_parquet(path)["messages"].to_list(), 1200)
    return collate(examples, tokenizer.pad_token_id, torch.device("cpu"))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_forward_gives_peft_s_loss_and_lora_gradients(tiny, batch, dtype, dropout):
    """Without dropout and with it: the same masks (from torch's generator) give peft's
    loss and LoRA gradients, where ours subtracts the dropped elements and peft's zeroes
    them in a copy of the input."""
    bf16 = dtype == torch.bfloat16
    model, _ = lora_model(tiny, dtype, dropout)
    ref_loss, ref = loss_and_grads(model, batch, bf16)
    assert (
        use_fused_lora(model)
        == sum(1 for n, _ in model.named_modules() if n.endswith("q_proj")) * 7
    )
    loss, grads = loss_and_grads(model, batch, bf16)
    # float32: rounding only; bf16: the add is rounded once instead of twice.
    rel = 1e-6 if not bf16 else 2e-3
    assert loss == pytest.approx(ref_loss, rel=rel)
    for name, g in ref.items():
        tol = 1e-4 if not bf16 else 3e-2
        torch.testing.assert_close(grads[name], g, rtol=tol, atol=tol * g.abs().max().item())


def test_disabled_adapters_and_merges_take_peft_s_path(tiny, batch):
    model, _ = lora_model(tiny, torch.float32)
    use_fused_lora(model)
    with torch.no_grad():
        base = load_base(tiny, dtype=torch.float32)[0](input_ids=batch["input_ids"][:1, :20]).logits
        with model.disable_adapter():
            off = model(input_ids=batch["input_ids"][:1, :20]).logits
        on = model(input_ids=batch["input_ids"][:1, :20]).logits
        model.merge_adapter()
        merged = model(input_ids=batch["input_ids"][:1, :20]).logits
    torch.testing.assert_close(off, base, rtol=0, atol=0)
    assert (on - off).abs().max() > 1e-3
    torch.testing.assert_close(merged, on, rtol=1e-4, atol=1e-4)


def test_cpu_training_uses_it_and_saves_peft_s_adapter(tiny, tmp_path):
    from peft import PeftConfig

    from molorec.fused_lora import fused_forward

    data = instructions(tmp_path / "d.parquet", 8)
    s = TrainSettings(per_device_batch=4, grad_accum=1, max_steps=2, save_every=0)
    out, model = train(tiny, [data], "domain", tmp_path / "ad", tmp_path / "ck", s, False)
    forwards = {m.forward.__func__ for m in model.modules() if hasattr(m, "lora_A") and m.lora_A}
    assert forwards == {fused_forward}
    assert PeftConfig.from_pretrained(out).r == s.lora_r


def test_a_bf16_model_with_its_float32_adapter_outside_autocast_gives_peft_s_logits(tiny, batch):
    """Where the trained model is used without autocast (evaluation of a bf16 model), peft
    casts the input to the adapter's float32 and adds in float32: so does the fused path."""
    model, _ = lora_model(tiny, torch.bfloat16)
    ids = batch["input_ids"][:2, :40]
    with torch.no_grad():
        theirs = model(input_ids=ids).logits
        use_fused_lora(model)
        ours = model(input_ids=ids).logits
    assert ours.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=1e-2, atol=2e-2)
