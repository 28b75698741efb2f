"""Blocked attention for CPUs: each block of queries reads only the keys it may see.

torch's CPU kernels for ``scaled_dot_product_attention`` are far below the machine's
matrix rate at a head size of 64: with a mask (padding, or the packed candidates of
``rank``) they compute every query-key pair, and in bf16 they reached 56-125 GFLOP/s where
a bf16 batched matmul of the same sizes reaches 230-310 on a 2-core AVX512-BF16 machine.
Attention was 43% of a training step and 38% of a ranking batch of SmolLM2-135M there.

Here attention is a loop over blocks of :data:`BLOCK` queries. A block computes scores
against the span of keys that any of its queries may see (for a causal mask, the keys up
to its last query; for a given mask, the first to the last key it allows), so the keys
after the diagonal and the masked-out candidates of other examples cost nothing. Scores
and products are batched matmuls in the model's dtype and the softmax is torch's fused
one (float32 inside), as transformers' eager attention computes them; a mask is added
only to the keys of a block that some query of it does not see. The grouped key/value
heads are read as they are, the query heads of a group stacked as rows, so keys and values
are never repeated. Like flash attention, no [q, k] tensor is kept for the backward, which
recomputes each block's probabilities: a training step needs less memory than with SDPA.

It is registered with transformers as ``molorec_blocked`` (:func:`use_blocked_attention`)
and used on CPUs only: on CUDA, SDPA's flash kernels are already at the matrix rate.
"""

from __future__ import annotations

import torch

NAME = "molorec_blocked"
# Queries per block: 64 ran fastest of 32-256 on SmolLM2-135M (a score matmul has 64 x the
# query heads of a group rows).
BLOCK = 64


def key_spans(
    mask: torch.Tensor | None, q_len: int, kv_len: int
) -> list[tuple[int, int, int, int]]:
    """(first query, end query, first key, end key) of every block of queries.

    ``mask``: None (causal, the queries being the last ``q_len`` of ``kv_len`` positions)
    or a boolean [B, 1, q, k] mask, True where a query may see a key. A block's keys span
    the first to the last key any of its queries may see."""
    spans = []
    offset = kv_len - q_len
    for lo in range(0, q_len, BLOCK):
        hi = min(lo + BLOCK, q_len)
        if mask is None:
            spans.append((lo, hi, 0, offset + hi))
            continue
        seen = torch.nonzero(mask[:, :, lo:hi].any(dim=(0, 1, 2)))
        if seen.numel():
            spans.append((lo, hi, int(seen[0]), int(seen[-1]) + 1))
        else:
            spans.append((lo, hi, 0, 0))
    return spans


def _probabilities(q, k, bias, groups: int, block_q: int) -> torch.Tensor:
    """softmax(q k^T + bias) of a block, in the inputs' dtype (torch's fused softmax
    accumulates in float32): q [B, KV, groups*block_q, d] (scaled) against k [B, KV, keys,
    d]; bias [B or 1, 1, block_q, columns] is added to the last ``columns`` keys only (the
    keys before them are seen by every query of the block)."""
    s = torch.matmul(q, k.transpose(-1, -2))
    if bias is not None:
        b, kv, _, keys = s.shape
        cols = bias.shape[-1]
        s.view(b, kv, groups, block_q, keys)[..., keys - cols :].add_(bias[:, :, None])
    return torch.softmax(s, dim=-1)


class BlockedAttention(torch.autograd.Function):
    """softmax(q k^T * scale + mask) v over the key spans of :func:`key_spans`.

    q [B, H, q, d]; k, v [B, KV, k, d] with H a multiple of KV; ``biases``: per span, None
    or the additive mask (0 where seen, -inf where not) of its last keys. Returns
    [B, H, q, d]. The backward recomputes each block's probabilities instead of keeping
    them (flash attention's trade: a matmul and a softmax more, no [q, k] tensors kept)."""

    @staticmethod
    def forward(ctx, q, k, v, scale: float, spans, biases):
        b, h, q_len, d = q.shape
        kv = k.shape[1]
        g = h // kv
        q = (q * scale).view(b, kv, g, q_len, d)
        out = q.new_zeros(b, kv, g, q_len, d)
        for (lo, hi, k0, k1), bias in zip(spans, biases, strict=True):
            if k1 <= k0:
                continue
            qb = q[:, :, :, lo:hi].reshape(b, kv, g * (hi - lo), d)
            p = _probabilities(qb, k[:, :, k0:k1], bias, g, hi - lo)
            out[:, :, :, lo:hi] = torch.matmul(p, v[:, :, k0:k1]).view(b, kv, g, hi - lo, d)
        ctx.save_for_backward(q, k, v)
        ctx.scale, ctx.spans, ctx.biases = scale, spans, biases
        return out.view(b, h, q_len, d)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        b, kv, g, q_len, d = q.shape
        grad_out = grad_out.contiguous().view(b, kv, g, q_len, d).to(v.dtype)
        dq = torch.zeros_like(q)
        dk = torch.zeros_like(k, dtype=torch.float32)  # sums over blocks: float32
        dv = torch.zeros_like(v, dtype=torch.float32)
        for (lo, hi, k0, k1), bias in zip(ctx.spans, ctx.biases, strict=True):
            if k1 <= k0:
                continue
            n = g * (hi - lo)
            qb = q[:, :, :, lo:hi].reshape(b, kv, n, d)
            ob = grad_out[:, :, :, lo:hi].reshape(b, kv, n, d)
            p = _probabilities(qb, k[:, :, k0:k1], bias, g, hi - lo)
            dv[:, :, k0:k1].add_(torch.matmul(p.transpose(-1, -2), ob))
            dp = torch.matmul(ob, v[:, :, k0:k1].transpose(-1, -2))
            ds = torch._softmax_backward_data(dp, p, -1, p.dtype)
            dq[:, :, :, lo:hi] = torch.matmul(ds, k[:, :, k0:k1]).view(b, kv, g, -1, d)
            dk[:, :, k0:k1].add_(torch.matmul(ds.transpose(-1, -2), qb))
        dq = (dq * ctx.scale).view(b, kv * g, q_len, d)
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None


def blocked_attention(q, k, v, mask=None, scale: float | None = None) -> torch.Tensor:
    """Attention of q [B, H, q, d] over k, v [B, KV, k, d]: causal where ``mask`` is None
    (queries at the last positions), else ``mask`` [B or 1, 1, q, k], boolean (True: seen)
    or additive float. A query that sees no key gets zeros."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    spans, biases, blank = _blocks(mask, q.shape[2], k.shape[2], q.dtype)
    out = BlockedAttention.apply(q, k, v, scale, spans, biases)
    return out if blank is None else out.masked_fill(blank, 0.0)


# The last mask and its blocks. The mask is kept alive here, so identity cannot be a new
# tensor's; its version counter tells an in-place change.
_last: list = [None, None]


def _blocks(mask, q_len: int, kv_len: int, dtype):
    """The spans, biases and queries that see nothing (None if none) of a mask. Every layer
    of a forward pass gets the same mask object: it is read once, not once per layer."""
    key = (q_len, kv_len, dtype, None if mask is None else mask._version)
    if _last[0] is not None and _last[0][0] is mask and _last[0][1] == key:
        return _last[1]
    if mask is None:
        rows = torch.arange(q_len)[:, None] + (kv_len - q_len)
        seen = (rows >= torch.arange(kv_len)[None])[None, None]
    elif mask.dtype == torch.bool:
        seen = mask
    else:
        seen = mask > torch.finfo(mask.dtype).min / 2
    sees = seen.any(-1, keepdim=True)
    blank = None if bool(sees.all()) else ~sees
    if blank is not None:  # computed as if it saw every key (finite, no NaN), then zeroed
        seen = seen | blank
    spans = key_spans(None if mask is None else seen, q_len, kv_len)
    biases = []
    for lo, hi, k0, k1 in spans:
        block = seen[:, :, lo:hi, k0:k1]
        hidden = torch.nonzero((~block).any(dim=(0, 1, 2)))
        if k1 <= k0 or not hidden.numel():
            biases.append(None)
            continue
        # Only the keys from the first one some query of the block does not see get a bias.
        block = block[..., int(hidden[0]) :]
        bias = torch.zeros(block.shape, dtype=dtype).masked_fill_(~block, -torch.inf)
        if mask is not None and mask.dtype != torch.bool:  # an additive mask's own values
            own = mask[:, :, lo:hi, k0 + int(hidden[0]) : k1].to(dtype)
            bias = torch.where(block, own, bias)
        biases.append(bias)
    blocks = spans, biases, blank
    _last[:] = [(mask, key), blocks]
    return blocks


def attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    """transformers' attention interface: [B, H, q, d] in, [B, q, H, d] out. A model that
    trains with attention dropout (GPT-2) goes through SDPA, which draws it."""
    if dropout and module.training:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kw
        )
    out = blocked_attention(query, key, value, attention_mask, scaling)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``molorec_blocked`` an attention implementation transformers knows, with the
    boolean masks of SDPA (None where causal alone is enough)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_blocked_attention(model) -> bool:
    """Switch a model on a CPU to blocked attention; True if switched. On CUDA, or for a
    model that cannot switch, it keeps its own."""
    if next(model.parameters()).device.type != "cpu":
        return False
    register()
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, AttributeError):
        return False
    return True
