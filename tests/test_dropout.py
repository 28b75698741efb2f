"""LoRA's input dropout on a CPU (molorec.dropout) against torch's own dropout."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from chat_data import instructions

from molorec.dropout import SparseDropout, dropped_positions
from molorec.train import TrainSettings, answer_loss, collate, encode, lora_config, train

P = 0.05


def test_each_position_is_dropped_independently_with_probability_p():
    n, draws = 12, 20_000
    masks = np.zeros((draws, n), dtype=bool)
    for seed in range(draws):
        masks[seed, dropped_positions(n, P, seed)] = True
    sigma = math.sqrt(P * (1 - P) / draws)
    # Every position, the first and the last included, at rate p.
    assert np.all(np.abs(masks.mean(axis=0) - P) < 5 * sigma), masks.mean(axis=0)
    # Neighbours independent: both dropped at rate p^2.
    both = (masks[:, :-1] & masks[:, 1:]).mean()
    assert abs(both - P * P) < 5 * math.sqrt(P * P / (draws * (n - 1))), both
    big = dropped_positions(2_000_000, P, 7)
    assert abs(len(big) / 2e6 - P) < 5 * math.sqrt(P * (1 - P) / 2e6)
    assert np.all(np.diff(big) > 0) and big[0] >= 0 and big[-1] < 2_000_000


def test_kept_values_and_gradients_are_those_of_peft_s_dropout():
    """peft drops a bf16 input after casting it to float32; autocast casts the result back
    to bf16 for the matmul. SparseDropout scales in the input's dtype: the same values."""
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(300, 64).to(dtype).requires_grad_()
        ours = SparseDropout(P).train()(x)
        theirs = F.dropout(x.float(), P, training=True).to(dtype)
        both = (ours != 0) & (theirs != 0)
        assert both.float().mean() > 0.85
        assert torch.equal(ours[both], theirs[both])
        assert abs((ours == 0).float().mean().item() - P) < 0.01
        (grad,) = torch.autograd.grad(ours.sum(), x)
        (ref,) = torch.autograd.grad(theirs.sum(), x)
        assert torch.equal(grad[both], ref[both])
        assert torch.equal(grad == 0, ours == 0)


def test_masks_follow_torch_seed_and_eval_mode_is_identity():
    x, dropout = torch.ones(50, 40), SparseDropout(P).train()
    torch.manual_seed(3)
    a = dropout(x)
    torch.manual_seed(3)
    assert torch.equal(a, dropout(x))
    assert not torch.equal(a, dropout(x))
    assert dropout.eval()(x) is x


def test_bf16_training_without_peft_input_cast_has_the_same_gradients(tiny, tmp_path):
    """Under bf16 autocast the LoRA path reads its input in bf16 (molorec.train disables
    peft's cast of it to float32): the LoRA gradients are those of peft's default path."""
    from peft import get_peft_model
    from peft.helpers import disable_input_dtype_casting

    from molorec.model import load_base

    model, tokenizer = load_base(tiny, dtype=torch.bfloat16)
    torch.manual_seed(0)
    model = get_peft_model(model, lora_config(TrainSettings(lora_dropout=0.0)))
    with torch.no_grad():  # B nonzero, so A's gradients and the LoRA outputs are tested too
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    path = instructions(tmp_path / "d.parquet", 4)
    examples, _ = encode(tokenizer, pl.read_parquet(path)["messages"].to_list(), 1200)
    batch = collate(examples, tokenizer.pad_token_id, torch.device("cpu"))

    def lora_grads():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = answer_loss(model, batch)
        loss.backward()
        return loss.item(), {
            n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad
        }

    loss_cast, cast = lora_grads()
    with disable_input_dtype_casting(model):
        loss_plain, plain = lora_grads()
    assert abs(loss_plain - loss_cast) <= 1e-3 * abs(loss_cast)
    for name, g in cast.items():
        assert torch.allclose(plain[name], g, rtol=2e-2, atol=1e-3 * g.abs().max().item()), name


def test_cpu_training_uses_it_and_saves_peft_s_adapter(tiny, tmp_path):
    data = instructions(tmp_path / "d.parquet", 8)
    s = TrainSettings(lora_dropout=P, per_device_batch=4, grad_accum=1, max_steps=2, save_every=0)
    out, model = train(tiny, [data], "domain", tmp_path / "ad", tmp_path / "ck", s, False)
    kinds = {
        type(d)
        for m in model.modules()
        if hasattr(m, "lora_dropout")
        for d in m.lora_dropout.values()
    }
    assert kinds == {SparseDropout}
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(out).lora_dropout == P
