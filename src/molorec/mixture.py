"""The mixture: frozen LoRA adapters on the base model's linear layers, mixed with learned
weights. Every LoRA-targeted linear layer m gets mixing logits theta (one entry per adapter,
shared per module, per transformer block or globally) and computes

    W0 x + sum_i w_i * s_i * B_i A_i x,    w = softmax(theta / T)  or  sigmoid(theta)

with the adapters frozen. The mixture is exported as ONE standard PEFT LoRA adapter,
exactly: A stacked from the adapters' A matrices, B from their B matrices times weight
and scaling, rank = sum of ranks, scaling 1. How the weights are learned is
molorec.fusion's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
PEFT_PREFIX = "base_model.model."


# --- adapters on disk ---------------------------------------------------------------------


@dataclass
class LoraAdapter:
    """One PEFT LoRA adapter: per module stem, A [r, in] and B [out, r], and its scaling."""

    path: Path
    config: dict
    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    scaling: float

    @classmethod
    def load(cls, path: str | Path) -> LoraAdapter:
        from safetensors.torch import load_file

        path = Path(path)
        config = json.loads((path / CONFIG_FILE).read_text())
        if config.get("rank_pattern") or config.get("alpha_pattern"):
            raise ValueError(f"{path}: per-module rank or alpha patterns are not supported")
        r, alpha = config["r"], config["lora_alpha"]
        scaling = alpha / r**0.5 if config.get("use_rslora") else alpha / r
        tensors = load_file(path / ADAPTER_FILE)
        A, B = {}, {}
        for key, value in tensors.items():
            if key.endswith(".lora_A.weight"):
                A[key[: -len(".lora_A.weight")]] = value
            elif key.endswith(".lora_B.weight"):
                B[key[: -len(".lora_B.weight")]] = value
        if A.keys() != B.keys() or not A:
            raise ValueError(f"{path}: not a LoRA adapter with matching A and B matrices")
        return cls(path, config, A, B, scaling)


def module_name(stem: str) -> str:
    """Adapter key stem -> the module's name in the base model."""
    return stem[len(PEFT_PREFIX) :] if stem.startswith(PEFT_PREFIX) else stem


# --- the mixture --------------------------------------------------------------------------


def group_of(stem: str, granularity: str) -> str:
    """Which mixing logits a module uses: its own, its transformer block's, or the model's."""
    if granularity == "module":
        return stem
    if granularity == "layer":
        m = re.search(r"\.layers\.(\d+)\.", stem)
        return f"layer{m.group(1)}" if m else "other"
    if granularity == "global":
        return "all"
    raise ValueError(f"fusion.granularity {granularity!r}: module | layer | global")


class MixingWeights(nn.Module):
    """The learnable logits theta per group and the activation that turns them into weights.

    ``floor`` > 0 keeps every weight in [floor, 1 - floor] (the floor guard): the activation's
    output is squeezed affinely, so no adapter can be switched off entirely."""

    def __init__(
        self,
        groups: list[str],
        n_adapters: int,
        activation: str,
        temperature: float,
        floor: float = 0.0,
    ):
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"fusion.activation {activation!r}: softmax | sigmoid")
        # softmax spreads n * floor over the adapters, sigmoid clips each weight at both ends
        self.span = 1 - floor * (n_adapters if activation == "softmax" else 2)
        if floor < 0 or self.span <= 0:
            raise ValueError(f"fusion.guard_strength {floor}: a floor must leave weight to learn")
        self.index = {g: i for i, g in enumerate(groups)}
        # Equal initial weights: softmax(0) = 1/n each, sigmoid(0) = 1/2 each.
        self.theta = nn.Parameter(torch.zeros(len(groups), n_adapters))
        self.activation, self.temperature, self.floor = activation, temperature, floor

    def raw(self) -> torch.Tensor:
        if self.activation == "softmax":
            return torch.softmax(self.theta / self.temperature, dim=-1)
        return torch.sigmoid(self.theta)

    def weights(self) -> torch.Tensor:
        return self.floor + self.span * self.raw() if self.floor else self.raw()


class MixtureLinear(nn.Module):
    """A base linear layer plus a weighted sum of frozen LoRA updates; adds nothing else."""

    def __init__(self, base: nn.Linear, A: list, B: list, scalings: list, mixing, group: str):
        super().__init__()
        self.base = base
        dtype, device = base.weight.dtype, base.weight.device
        # Stacked once: x A^T for all adapters in one matmul, then one B matmul.
        self.register_buffer("A", torch.cat(A).to(device, dtype), persistent=False)
        self.register_buffer("B", torch.cat(B, dim=1).to(device, dtype), persistent=False)
        self.register_buffer("scaling", torch.tensor(scalings), persistent=False)
        self.ranks = [a.shape[0] for a in A]
        self.mixing = [mixing]  # a list: not registered as this module's child
        self.group = group
        self.merge_for_decoding = False
        # Without gradient the weights change only at an optimizer step: computed once per
        # version of theta (bumped by every in-place update), not once per decoded token.
        self._scale: tuple[int, torch.dtype, torch.Tensor] | None = None
        self._merged: tuple[int, torch.Tensor] | None = None

    def mix(self) -> torch.Tensor:
        """Effective weights w_i of this layer (after the activation)."""
        mixing = self.mixing[0]
        return mixing.weights()[mixing.index[self.group]]

    def column_scale(self) -> torch.Tensor:
        """Per rank-column factor w_i * s_i of the stacked matrices."""
        mix = self.mix()
        per_adapter = mix * self.scaling.to(mix.device)
        return torch.repeat_interleave(
            per_adapter, torch.tensor(self.ranks, device=per_adapter.device)
        )

    def decoding_scale(self, dtype: torch.dtype) -> torch.Tensor:
        """column_scale without gradient, kept until theta changes: the very same values."""
        version = self.mixing[0].theta._version
        if self._scale is None or self._scale[:2] != (version, dtype):
            self._scale = (version, dtype, self.column_scale().to(dtype))
        return self._scale[2]

    def merged_weight(self) -> torch.Tensor:
        """W + B diag(w s) A at the current mixing weights, computed in fp32 and kept until
        theta changes: one matmul per layer when decoding instead of three."""
        version = self.mixing[0].theta._version
        if self._merged is None or self._merged[0] != version:
            with torch.no_grad():
                delta = (self.B.float() * self.column_scale().float()) @ self.A.float()
                weight = (self.base.weight.float() + delta).to(self.base.weight.dtype)
            self._merged = (version, weight)
        return self._merged[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            scale = self.column_scale().to(x.dtype)
        elif self.merge_for_decoding:
            return F.linear(x, self.merged_weight(), self.base.bias)
        else:
            scale = self.decoding_scale(x.dtype)
        return self.base(x) + F.linear(F.linear(x, self.A) * scale, self.B)


def fitting_layer(model, stem: str, adapters: list[LoraAdapter]) -> nn.Linear:
    """The base model's linear layer an adapter key wraps; an adapter trained on another
    base model fails here, naming the module and the shapes, not deep inside a matmul."""
    name = module_name(stem)
    try:
        layer = model.get_submodule(name)
    except AttributeError:
        layer = None
    for adapter in adapters:
        A, B = adapter.A[stem], adapter.B[stem]
        if not isinstance(layer, nn.Linear):
            raise ValueError(
                f"{adapter.path}: {name} is not a linear layer of the base model: the adapter "
                "was trained on another base model"
            )
        if A.shape[1] != layer.in_features or B.shape[0] != layer.out_features:
            raise ValueError(
                f"{adapter.path}: {name}: LoRA A {tuple(A.shape)} and B {tuple(B.shape)} do not "
                f"fit the base layer ({layer.in_features} -> {layer.out_features}): the "
                "adapter was trained on another base model"
            )
    return layer


class Mixture(nn.Module):
    """A base causal LM whose LoRA-targeted layers mix the given adapters."""

    def __init__(
        self,
        model,
        adapters: list[LoraAdapter],
        granularity: str = "module",
        activation: str = "softmax",
        temperature: float = 1.0,
        floor: float = 0.0,
        merge_for_decoding: bool = False,
    ):
        super().__init__()
        stems = list(adapters[0].A)
        for adapter in adapters[1:]:
            if set(adapter.A) != set(stems):
                raise ValueError(
                    f"{adapter.path}: wraps other modules than {adapters[0].path}; mixing needs "
                    "the same target modules in every adapter"
                )
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        self.adapters = adapters
        self.stems = stems
        groups = list(dict.fromkeys(group_of(s, granularity) for s in stems))
        self.mixing = MixingWeights(groups, len(adapters), activation, temperature, floor)
        self.layers: dict[str, MixtureLinear] = {}
        for stem in stems:
            parent_name, _, child = module_name(stem).rpartition(".")
            base_layer = fitting_layer(model, stem, adapters)
            parent = model.get_submodule(parent_name)
            layer = MixtureLinear(
                base_layer,
                [a.A[stem] for a in adapters],
                [a.B[stem] for a in adapters],
                [a.scaling for a in adapters],
                self.mixing,
                group_of(stem, granularity),
            )
            layer.merge_for_decoding = merge_for_decoding
            setattr(parent, child, layer)
            self.layers[stem] = layer

    def effective_weights(self) -> dict[str, list[float]]:
        """Per wrapped layer (named as in the adapters' keys), the weights in adapter order."""
        with torch.no_grad():
            return {stem: layer.mix().tolist() for stem, layer in self.layers.items()}

    def set_weights(self, weights: list[float]) -> None:
        """Fix every layer's effective weights (e.g. [1, 0]); softmax needs a distribution."""
        w = torch.tensor(weights, dtype=torch.float32)
        w = (w - self.mixing.floor) / self.mixing.span
        with torch.no_grad():
            if self.mixing.activation == "softmax":
                theta = torch.log(w.clamp_min(1e-30)) * self.mixing.temperature
            else:
                theta = torch.logit(w.clamp(1e-7, 1 - 1e-7))
            self.mixing.theta.copy_(theta.expand_as(self.mixing.theta))

    def export(self, out_dir: str | Path, tokenizer=None) -> Path:
        """Write the mixture as one exact PEFT LoRA adapter (rank = sum of ranks, scaling 1)."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {}
        with torch.no_grad():
            for stem, layer in self.layers.items():
                A = torch.cat([a.A[stem] for a in self.adapters]).float()
                B = torch.cat([b.B[stem] for b in self.adapters], dim=1).float()
                tensors[f"{stem}.lora_A.weight"] = A.contiguous()
                tensors[f"{stem}.lora_B.weight"] = (
                    B * layer.column_scale().float().cpu()
                ).contiguous()
        save_file(tensors, out / ADAPTER_FILE, metadata={"format": "pt"})
        rank = sum(a.config["r"] for a in self.adapters)
        config = dict(self.adapters[0].config)
        config.update(
            r=rank,
            lora_alpha=rank,  # scaling alpha / r = 1: the weights and scalings sit in B
            use_rslora=False,
            lora_dropout=0.0,
            rank_pattern={},
            alpha_pattern={},
            target_modules=sorted({s.rsplit(".", 1)[-1] for s in self.stems}),
        )
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        return out
