"""molorec.attention: blocked attention against torch's own SDPA, as a kernel and in a model.

The reference is ``torch.nn.functional.scaled_dot_product_attention`` on repeated key/value
heads, the path transformers' ``sdpa`` takes. In float32 the two agree to rounding, values
and gradients, for the masks the pipeline makes: causal (training, the prompts of ``rank``),
a padding mask, the packed candidates of ``rank`` (an additive 4D mask), queries after a
cache. In bf16 each path rounds in its own way, so a model's loss is compared with float32's.
"""

from __future__ import annotations

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from molorec import attention
from molorec.attention import NAME, blocked_attention, key_spans
from molorec.model import load_base
from molorec.predict import rank_batch
from molorec.train import answer_loss, collate, encode


def sdpa(q, k, v, mask):
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    if mask is None:  # causal, queries at the last positions (after a cache)
        q_len, kv_len = q.shape[2], k.shape[2]
        rows = torch.arange(q_len)[:, None] + kv_len - q_len
        mask = rows >= torch.arange(kv_len)[None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def inputs(b=3, heads=6, kv=2, q_len=300, kv_len=300, d=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, heads, q_len, d, generator=gen).requires_grad_()
    k = torch.randn(b, kv, kv_len, d, generator=gen).requires_grad_()
    v = torch.randn(b, kv, kv_len, d, generator=gen).requires_grad_()
    return q, k, v


def padding_mask(lengths, n):
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    return (causal[None] & (torch.arange(n)[None, None] < torch.tensor(lengths)[:, None, None]))[
        :, None
    ]


def packed_mask(prompt_lengths, candidate_lengths, width):
    """rank's mask: each candidate token sees its example's prompt and its own earlier
    tokens (offsets restart per candidate)."""
    rows = []
    for p_len, cands in zip(prompt_lengths, candidate_lengths, strict=True):
        owner = torch.repeat_interleave(torch.arange(len(cands)), torch.tensor(cands))
        offset = torch.cat([torch.arange(n) for n in cands])
        own = (owner[:, None] == owner[None]) & (offset[:, None] >= offset[None])
        prompt = torch.arange(width)[None].expand(len(owner), width) < p_len
        rows.append(torch.cat([prompt, own], 1))
    return torch.stack(rows)[:, None]


def assert_same(q, k, v, mask, tol=2e-5):
    out = blocked_attention(q, k, v, mask)
    ref = sdpa(q, k, v, mask)
    grad = torch.randn_like(ref)
    ours = torch.autograd.grad(out, (q, k, v), grad)
    theirs = torch.autograd.grad(ref, (q, k, v), grad)
    torch.testing.assert_close(out, ref, rtol=0, atol=tol)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=tol * 10)


def test_causal_attention_equals_sdpa_values_and_gradients():
    assert_same(*inputs(), None)


def test_queries_after_a_cache_see_every_cached_key():
    assert_same(*inputs(q_len=70, kv_len=230), None)


def test_a_padding_mask_equals_sdpa():
    assert_same(*inputs(), padding_mask([300, 200, 37], 300))


def test_rank_packed_candidates_mask_equals_sdpa_boolean_and_additive():
    prompt_lengths, cands = [90, 60], [[5, 9, 3, 12, 7] * 8, [4, 6, 8] * 10]
    c_width = max(sum(c) for c in cands)
    cands = [c + [c_width - sum(c)] if sum(c) < c_width else c for c in cands]
    mask = packed_mask(prompt_lengths, cands, 90)
    q, k, v = inputs(b=2, q_len=c_width, kv_len=90 + c_width)
    assert_same(q, k, v, mask)
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    assert_same(q, k, v, additive)


def test_blocks_read_only_the_keys_they_may_see():
    """The point of it: a causal block stops at its last query, and a packed block skips
    the other candidates before it."""
    spans = key_spans(None, 300, 300)
    assert [(lo, hi, k1) for lo, hi, _, k1 in spans] == [
        (lo, min(lo + attention.BLOCK, 300), min(lo + attention.BLOCK, 300))
        for lo in range(0, 300, attention.BLOCK)
    ]
    mask = torch.zeros(1, 1, 256, 512, dtype=torch.bool)
    mask[..., 64:128, 400:450] = True
    assert key_spans(mask, 256, 512)[1] == (64, 128, 400, 450)
    assert key_spans(mask, 256, 512)[0][2:] == (0, 0)


def test_a_query_that_sees_nothing_gets_zeros_and_finite_gradients():
    q, k, v = inputs(b=2, q_len=50, kv_len=50)
    mask = (
        padding_mask([50, 50], 50) & (torch.arange(50) >= torch.tensor([[0], [10]]))[:, None, None]
    )  # left padding: the first 10 queries of example 1 see nothing
    out = blocked_attention(q, k, v, mask)
    out.sum().backward()
    assert out[1, :, :10].abs().max() == 0
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_grouped_query_heads_are_not_mixed_up():
    """Each query head reads its own key/value group: with one group's values zeroed, only
    that group's query heads give zeros."""
    q, k, v = inputs(heads=6, kv=3)
    v = v.detach().clone()
    v[:, 1] = 0
    out = blocked_attention(q, k, v, None)
    assert out[:, 2:4].abs().max() == 0
    assert out[:, :2].abs().max() > 0 and out[:, 4:].abs().max() > 0


# --- in a model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(tiny, tokenizer, tmp_path_factory):
    from chat_data import instructions

    data = instructions(tmp_path_factory.mktemp("attention") / "train.parquet", 6)
    rows = pl.read_parquet(data)["messages"].to_list()
    encoded, _ = encode(tokenizer, rows, 1200)
    return collate(encoded, tokenizer.pad_token_id, torch.device("cpu"))


def test_load_base_uses_blocked_attention_on_a_cpu_and_sdpa_when_asked(tiny, monkeypatch):
    assert load_base(tiny)[0].config._attn_implementation == NAME
    monkeypatch.setenv("MOLOREC_ATTENTION", "sdpa")
    assert load_base(tiny)[0].config._attn_implementation == "sdpa"


def lora_loss(model_dir, batch, implementation, dtype):
    from peft import LoraConfig, get_peft_model

    model, _ = load_base(model_dir, dtype=dtype)
    model.set_attn_implementation(implementation)
    torch.manual_seed(0)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0)
    )
    for name, p in model.named_parameters():  # B != 0, so the LoRA path carries gradient
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss, n = answer_loss(model, batch)
    (loss / n).backward()
    grads = {k: p.grad.float() for k, p in model.named_parameters() if p.requires_grad}
    return float(loss / n), grads


def test_training_loss_and_lora_gradients_equal_sdpa_in_float32(tiny, batch):
    loss, grads = lora_loss(tiny, batch, NAME, torch.float32)
    ref_loss, ref_grads = lora_loss(tiny, batch, "sdpa", torch.float32)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6)


def test_training_loss_in_bf16_is_as_close_to_float32_as_sdpa(tiny, batch):
    exact, _ = lora_loss(tiny, batch, "sdpa", torch.float32)
    ours, _ = lora_loss(tiny, batch, NAME, torch.bfloat16)
    theirs, _ = lora_loss(tiny, batch, "sdpa", torch.bfloat16)
    assert abs(ours - exact) / exact < 1e-2
    assert abs(ours - exact) <= 3 * abs(theirs - exact) + 1e-3 * exact


def test_rank_scores_equal_sdpa_in_float32(tiny, tokenizer):
    from chat_data import TITLES, conversation

    from molorec.predict import candidate_ids, prompt_ids

    model, _ = load_base(tiny)
    prompts = [prompt_ids(tokenizer, conversation(i, "x")) for i in range(4)]
    cands = [candidate_ids(tokenizer, TITLES[i : i + 6]) for i in range(4)]
    ours = rank_batch(model, prompts, cands)
    model.set_attn_implementation("sdpa")
    theirs = rank_batch(model, prompts, cands)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
        assert torch.equal(a.argsort(descending=True), b.argsort(descending=True))


def test_a_mask_changed_in_place_is_read_again():
    """The blocks of the last mask are reused while the same, unchanged mask comes back
    (every layer of a forward pass); a mask edited in place is read again."""
    q, k, v = inputs(b=2, q_len=60, kv_len=60)
    mask = padding_mask([60, 60], 60)
    assert_same(q, k, v, mask)
    mask[1, ..., 40:] = False  # example 1 now ends at 40
    assert_same(q, k, v, mask)
