"""LoRA's addition to a frozen linear layer as one matrix product, for training on a CPU.

peft's LoRA linear computes ``result + lora_B(lora_A(dropout(x))) * scaling``: after the
rank-r product, a multiply over the whole [tokens, out] output, then an add, and in the
backward pass the multiply again. On a CPU, where these passes run at memory speed beside
matrix products that run at the GEMM rate, the 210 modules of SmolLM2-135M spend a
noticeable part of a step there. Here the B product, the scaling and the add are one
``torch.addmm(result, A(dropout(x)), Bᵀ, alpha=scaling)``: the same value, with no pass of
its own. Anything but the plain case (adapters disabled or merged, several active
adapters, a LoRA variant, per-row adapter names) goes through peft's own forward.
"""

from __future__ import annotations

import types

import torch


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
    result = layer.base_layer(x, *args)
    x = layer._cast_input_dtype(x, layer.lora_A[name].weight.dtype)
    low = layer.lora_A[name](layer.lora_dropout[name](x))
    # As peft adds: in the wider of the two dtypes (a bf16 model's float32 adapter outside
    # autocast), back to the model's dtype after; under autocast addmm runs in bf16.
    wide = torch.promote_types(result.dtype, low.dtype)
    out = torch.addmm(
        result.reshape(-1, result.shape[-1]).to(wide),
        low.reshape(-1, low.shape[-1]).to(wide),
        layer.lora_B[name].weight.t().to(wide),
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
