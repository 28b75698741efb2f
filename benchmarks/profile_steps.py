"""Where a training step's and a ranking batch's time goes, by kind of work.

One LoRA training step (the default settings: micro-batch 4, r 16, all linear layers, the
sample's Beauty training rows) and one ``rank`` batch (the default evaluate.batch_size of
the sample's Beauty test examples, 30 candidates each) run under ``torch.profiler``, after a
warm-up of each. Every operator's *self* CPU time is put in one kind:

- gemm: the matrix products (mm, addmm, bmm, linear's kernels), frozen and LoRA alike,
  with the LoRA ones (an inner size or output of r) counted apart;
- attention: scaled_dot_product_attention's kernels, forward and backward;
- elementwise: norms, activations, rotary, adds and multiplies, softmax and logsumexp;
- copy/cast: ``to``, ``copy_``, ``contiguous``, ``cat``, index and fill operations;
- dropout: molorec's sparse LoRA dropout (its numpy draws are outside torch: they show in
  "not in an operator");
- optimizer: AdamW and the gradient clearing;
- the rest by name.

"Not in an operator" is wall time minus the operators' self time: Python, autograd's
bookkeeping, the profiler's own cost. Shares are of the profiled wall time; the profiler
slows small operators most, so the unprofiled time of the same step is printed beside it.

    python benchmarks/profile_steps.py [--model smollm2-135m] [--precision auto]
                                       [--threads N] [--cache /tmp/molorec-bench-train]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

KINDS = {
    "gemm": ("aten::mm", "aten::addmm", "aten::bmm", "aten::_mkldnn", "mkldnn"),
    "attention": ("scaled_dot_product", "_flash_attention", "_efficient_attention"),
    "optimizer": ("Optimizer.", "aten::_foreach", "aten::_fused_adamw", "zero_grad"),
    "copy/cast": (
        "aten::copy_",
        "aten::to",
        "aten::_to_copy",
        "aten::contiguous",
        "aten::cat",
        "aten::index",
        "aten::fill_",
        "aten::zero_",
        "aten::clone",
        "aten::masked_fill",
        "aten::scatter",
        "aten::gather",
        "aten::embedding",
        "aten::where",
    ),
}


def kind_of(name: str) -> str:
    for kind, prefixes in KINDS.items():
        if any(name.startswith(p) or p in name for p in prefixes):
            return kind
    if name.startswith("aten::"):
        return "elementwise"
    return name


def summarise(prof, wall_s: float, title: str, plain_s: float) -> None:
    by_kind: dict[str, float] = defaultdict(float)
    top: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        s = event.self_cpu_time_total / 1e6
        by_kind[kind_of(event.key)] += s
        top[event.key] += s
    in_ops = sum(by_kind.values())
    by_kind["not in an operator"] = max(0.0, wall_s - in_ops)
    print(f"\n{title}: {plain_s:.2f} s unprofiled, {wall_s:.2f} s profiled")
    for kind, s in sorted(by_kind.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {kind:<24} {s:7.2f} s  {s / wall_s:6.1%}")
    print("  top operators by self time:")
    for name, s in sorted(top.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {name:<50} {s:7.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/molorec-bench-train"))
    args = ap.parse_args()

    import polars as pl
    import torch
    from bench_train import BATCH, prepare, settings
    from peft import get_peft_model
    from peft.helpers import disable_input_dtype_casting
    from torch.profiler import ProfilerActivity, profile

    from molorec.dropout import use_sparse_dropout
    from molorec.evaluate import scenario_examples
    from molorec.fused_lora import use_fused_lora
    from molorec.model import load_base, model_dtype
    from molorec.predict import candidate_ids, prompt_ids, rank_batch
    from molorec.schema import defaults
    from molorec.train import answer_loss, collate, encode, lora_config

    torch.set_num_threads(args.threads)
    model_dir, data = prepare(args.cache, 64, args.model)
    dtype = model_dtype(args.precision, cuda=False)
    bf16 = dtype == torch.bfloat16
    print(f"{args.model}, {dtype}, {args.threads} threads, micro-batch {BATCH}")

    # --- one training step ---
    s = settings(1, "bf16" if bf16 else "fp32")
    model, tokenizer = load_base(str(model_dir), dtype=dtype)
    torch.manual_seed(s.seed)
    model = get_peft_model(model, lora_config(s))
    use_sparse_dropout(model)
    use_fused_lora(model)  # as molorec.train does on a CPU
    model.train()
    encoded, _ = encode(tokenizer, pl.read_parquet(data)["messages"].to_list(), s.max_length)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr)
    batches = [
        collate(encoded[i : i + BATCH], tokenizer.pad_token_id, torch.device("cpu"))
        for i in range(0, 3 * BATCH, BATCH)
    ]

    def step(batch):
        with disable_input_dtype_casting(model, active=bf16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, n = answer_loss(model, batch)
            (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up
    t = time.perf_counter()
    step(batches[1])
    plain = time.perf_counter() - t
    tokens = int(batches[2]["attention_mask"].sum())
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        step(batches[2])
        wall = time.perf_counter() - t
    summarise(prof, wall, f"training step ({tokens} tokens)", plain)

    # --- one ranking batch ---
    model = optimizer = None  # free the training model before loading the ranking one
    model, tokenizer = load_base(str(model_dir), dtype=dtype)
    model.eval()
    folder = args.cache / "data"
    size = defaults("evaluate")["batch_size"]
    rows = scenario_examples(
        pl.read_parquet(folder / "examples.parquet"),
        pl.read_parquet(folder / "instructions.parquet"),
        "test",
        "warm",
        3 * size,
    )
    titles = dict(pl.read_parquet(folder / "items.parquet").select("item", "title").iter_rows())
    prompts = [prompt_ids(tokenizer, m) for m in rows["messages"].to_list()]
    cands = [candidate_ids(tokenizer, [titles[i] for i in c]) for c in rows["candidates"]]

    def rank(lo):
        rank_batch(model, prompts[lo : lo + size], cands[lo : lo + size])

    rank(0)
    t = time.perf_counter()
    rank(size)
    plain = time.perf_counter() - t
    n_tokens = sum(len(p) for p in prompts[2 * size :]) + sum(
        len(c) for cs in cands[2 * size :] for c in cs
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        rank(2 * size)
        wall = time.perf_counter() - t
    summarise(prof, wall, f"rank batch ({size} examples, {n_tokens} tokens)", plain)


if __name__ == "__main__":
    main()
