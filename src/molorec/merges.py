"""Merged adapters from peft's own merge methods (``LoraModel.add_weighted_adapter``): the
simple merges that a learned mixture has to beat, each exported as one standard PEFT LoRA
adapter that the evaluation loads like any other.

Nothing here reimplements a merge: the adapters are loaded into one PeftModel, peft merges
them, and the merged adapter is saved as peft saves it. The methods that drop entries at
random (``dare_*``) draw from torch's generator, seeded first, so a merge is reproducible.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

# peft's combination types for LoRA; ``density`` is read by those that prune.
METHODS = (
    "linear",
    "cat",
    "svd",
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)
PRUNING = {m for m in METHODS if m.startswith(("ties", "dare", "magnitude"))}
MERGED = "merged"
INFO_FILE = "merge_info.json"


def merge_adapters(
    base: str,
    adapters: list[str],
    method: str,
    weights: list[float],
    out_dir: str | Path,
    density: float | None = None,
    seed: int = 0,
) -> Path:
    """Merge ``adapters`` (folders, in order) with ``weights`` by peft's ``method`` and
    write ``out_dir/adapter/`` (a PEFT adapter with the tokenizer) and merge_info.json."""
    point = {"label": Path(out_dir).name, "weights": weights, "density": density}
    merge_points(base, adapters, method, {Path(out_dir): point}, seed)
    return Path(out_dir) / "adapter"


def check_point(method: str, n_adapters: int, weights: list[float], density) -> None:
    if method not in METHODS:
        raise ValueError(f"merge method {method!r}: expected one of {', '.join(METHODS)}")
    if len(weights) != n_adapters:
        raise ValueError(f"{n_adapters} adapters but {len(weights)} weights")
    if (density is not None) != (method in PRUNING):
        raise ValueError(f"merge method {method}: density is for {', '.join(sorted(PRUNING))}")


def merge_points(
    base: str, adapters: list[str], method: str, points: dict[Path, dict], seed: int = 0
) -> list[dict]:
    """Every point of a method's grid from one load of the base model: ``points`` maps an
    output folder to its ``weights`` and ``density``. Each merge starts from the same
    loaded adapters and a generator seeded anew, so each folder is the one a merge of its
    own writes. Returns the merge_info of every point."""
    from peft import PeftModel

    from molorec.model import load_base, sort_target_modules

    for point in points.values():
        check_point(method, len(adapters), point["weights"], point["density"])
    model, tokenizer = load_base(base)
    names = [f"adapter{i}" for i in range(len(adapters))]
    peft_model = PeftModel.from_pretrained(model, adapters[0], adapter_name=names[0])
    for name, path in zip(names[1:], adapters[1:], strict=True):
        peft_model.load_adapter(path, adapter_name=name)
    infos = []
    for out_dir, point in points.items():
        torch.manual_seed(seed)
        peft_model.add_weighted_adapter(
            names,
            list(point["weights"]),
            MERGED,
            combination_type=method,
            density=point["density"],
        )
        out = Path(out_dir)
        adapter = out / "adapter"
        shutil.rmtree(adapter, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            # peft saves an adapter that is not the default one in a folder of its name;
            # its merges want target_modules as a set again afterwards
            kept = {n: c.target_modules for n, c in peft_model.peft_config.items()}
            sort_target_modules(peft_model)
            peft_model.save_pretrained(tmp, selected_adapters=[MERGED])
            for name, config in peft_model.peft_config.items():
                config.target_modules = kept[name]
            shutil.move(str(Path(tmp) / MERGED), adapter)
        tokenizer.save_pretrained(adapter)
        info = {
            "adapters": [str(a) for a in adapters],
            "method": method,
            "weights": list(point["weights"]),
            "density": point["density"],
            "seed": seed,
            "rank": peft_model.peft_config[MERGED].r,
        }
        (out / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
        infos.append(info)
        peft_model.delete_adapter(MERGED)
    return infos
