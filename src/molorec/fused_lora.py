"""peft's LoRA linear layer with fewer passes over its input and output, for a CPU.

peft computes ``result + lora_B(lora_A(dropout(x))) * scaling``. Beside the matrix products,
which run at the GEMM rate, that is a masked copy of x (kept for the backward pass), a
multiply and an add over the [tokens, out] output, and in the backward pass a clone, fill
and multiply of x's gradient and the add of its two parts: passes at memory speed, over the
210 modules of SmolLM2-135M a noticeable part of a step, and the copies a good part of its
memory. Two paths, each giving peft's value:

- training (gradients on, a frozen ``nn.Linear`` base, molorec's SparseDropout or none):
  :class:`LoraLinear`, one autograd function for the whole layer;
- otherwise the plain case (one active adapter, not merged or disabled, no LoRA variant):
  the B product, the scaling and the add as one ``torch.addmm``.

Anything else goes through peft's own forward. Only molorec.train uses this, on a CPU.
"""

from __future__ import annotations

import types
import warnings

import torch

from molorec.dropout import SparseDropout

# The CSR tensors here are built and used by this module alone, with the layout checked.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class LoraLinear(torch.autograd.Function):
    """``x Wᵀ + b + scaling · (dropout(x) Aᵀ) Bᵀ`` for a frozen W, with the dropout given as
    its dropped flat positions and 1 / (1 - p), never as a masked copy of x.

    The dropped elements (p · n of them, about 5%) are subtracted where they meet A: from
    ``x Aᵀ`` in the forward pass, from ``gradᵀ x`` for A's gradient, and from x's gradient,
    which gets the frozen and the LoRA parts in one buffer. Beside peft's modules this saves,
    per module and step, the masked copy of x (kept for the backward pass too), the clone,
    fill and scaling of its gradient, and the add of the two parts of x's gradient: passes at
    memory speed over a [tokens, in] tensor. All operands come in one dtype; the corrections
    are summed in float32.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling, keep, dropped):
        low = x @ lora_a.t()
        dropped_x = a_t = rows = None
        if dropped.numel():
            # The dropped elements of x as a sparse [tokens, in] matrix (CSR: dropped is
            # sorted), float32 as MKL's sparse products need.
            tokens, width = x.shape
            crow = torch.searchsorted(dropped, torch.arange(tokens + 1) * width)
            rows = torch.repeat_interleave(torch.arange(tokens), crow.diff())
            values = x.view(-1).index_select(0, dropped).float()
            dropped_x = torch.sparse_csr_tensor(
                crow, dropped - rows * width, values, x.shape, check_invariants=False
            )
            a_t = lora_a.t().float().contiguous()  # [in, r]
            with torch.autocast(x.device.type, enabled=False):  # float32, not autocast's dtype
                low = (low.float() - dropped_x @ a_t).mul_(keep).to(x.dtype)
        elif keep != 1.0:
            low = low * keep
        out = torch.addmm(bias, x, weight.t()) if bias is not None else x @ weight.t()
        out.addmm_(low, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(x, weight, lora_a, lora_b, low, dropped, dropped_x, a_t, rows)
        ctx.scaling, ctx.keep = scaling, keep
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, lora_a, lora_b, low, dropped, dropped_x, a_t, rows = ctx.saved_tensors
        s, keep = ctx.scaling, ctx.keep
        grad_low = (grad @ lora_b).mul_(s)  # [tokens, r]
        grad_b = (grad.t() @ low).mul_(s)
        grad_a = grad_low.t() @ x
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ weight
            grad_x.addmm_(grad_low, lora_a, alpha=keep)
        if dropped_x is not None:
            grad_low = grad_low.float()
            cols, values = dropped_x.col_indices(), dropped_x.values()
            # A's gradient without the dropped elements: (dropped_xᵀ grad_low)ᵀ
            corr_a = torch.zeros(a_t.shape, dtype=torch.float32)
            corr_a.index_add_(0, cols, grad_low.index_select(0, rows).mul_(values[:, None]))
            grad_a = (grad_a.float() - corr_a.t()).to(x.dtype)
            if grad_x is not None:
                # (grad_low A) at the dropped positions only, taken back out of x's gradient
                at_dropped = torch.sparse.sampled_addmm(
                    dropped_x, grad_low, a_t.t(), beta=0.0, alpha=-keep
                ).values()
                grad_x.view(-1).index_add_(0, dropped, at_dropped.to(grad_x.dtype))
        grad_a = grad_a.mul_(keep) if keep != 1.0 else grad_a
        return grad_x, None, None, grad_a, grad_b, None, None, None


def _compute_dtype(x, weight, lora_a):
    """The one dtype the LoRA function can run in, or None (then peft's path)."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        return dtype if x.dtype == weight.dtype == dtype else None
    return x.dtype if x.dtype == weight.dtype == lora_a.dtype else None


def fused_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """peft's ``lora.Linear.forward`` for one plain active adapter, the B product fused."""
    active = layer.active_adapters
    plain = (
        len(active) == 1
        and active[0] in layer.lora_A
        and not (layer.disable_adapters or layer.merged or layer.lora_variant)
        and not kwargs
    )
    if not plain:
        return type(layer).forward(layer, x, *args, **kwargs)
    name = active[0]
    base, lora_a, lora_b = layer.base_layer, layer.lora_A[name].weight, layer.lora_B[name].weight
    dropout = layer.lora_dropout[name]
    if (
        torch.is_grad_enabled()
        and type(base) is torch.nn.Linear
        and not base.weight.requires_grad
        and isinstance(dropout, SparseDropout | torch.nn.Identity)
        and (dtype := _compute_dtype(x, base.weight, lora_a)) is not None
    ):
        flat = x.reshape(-1, x.shape[-1])
        if isinstance(dropout, SparseDropout) and dropout.training:
            keep, dropped = 1.0 / (1.0 - dropout.p), dropout.draw(flat.numel())
        else:
            keep, dropped = 1.0, torch.empty(0, dtype=torch.long)
        bias = base.bias.to(dtype) if base.bias is not None else None
        out = LoraLinear.apply(
            flat.contiguous(),
            base.weight,
            bias,
            lora_a.to(dtype),
            lora_b.to(dtype),
            layer.scaling[name],
            keep,
            dropped,
        )
        return out.view(*x.shape[:-1], -1)
    result = base(x, *args)
    x = layer._cast_input_dtype(x, lora_a.dtype)
    low = layer.lora_A[name](dropout(x))
    # As peft adds: in the wider of the two dtypes (a bf16 model's float32 adapter outside
    # autocast), back to the model's dtype after; under autocast addmm runs in bf16.
    wide = torch.promote_types(result.dtype, low.dtype)
    out = torch.addmm(
        result.reshape(-1, result.shape[-1]).to(wide),
        low.reshape(-1, low.shape[-1]).to(wide),
        lora_b.t().to(wide),
        alpha=layer.scaling[name],
    )
    return out.view(result.shape).to(result.dtype)


def use_fused_lora(model: torch.nn.Module) -> int:
    """Give every peft LoRA linear module the fused forward; returns how many. Nothing is
    saved with a forward, so the adapter's files are those of peft's own."""
    from peft.tuners.lora import Linear

    fused = 0
    for module in model.modules():
        if type(module) is Linear and not module.fan_in_fan_out:
            module.forward = types.MethodType(fused_forward, module)
            fused += 1
    return fused
