"""Prediction backends benchmark: examples per second of `rank` against `generate`.

Same model -- tiny-qwen2 (real Qwen vocabulary) with an adapter that answers with 5 titles,
or the real smollm2-135m as it is (--model smollm2-135m; answers capped at --max-new-tokens) -- same
test examples of the bundled sample's Beauty domain, same run. `generate` decodes the
answer greedily (batched, left padding) and parses it; `rank` scores the 30 candidates
by log-likelihood with the prompt's KV cache shared.

For `rank` it also prints the model FLOP/s (molorec.flops.rank_flops of every example over
the time) as a share of this machine's bf16 and fp32 ``torch.matmul`` rate at the model's
projection shapes, measured in the same run.

    python benchmarks/bench_eval.py [--examples 16] [--model smollm2-135m] [--precision bf16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl
import torch
from bench_fusion import adapters, base_model, sample_instructions

from molorec.evaluate import predict_llm, scenario_examples
from molorec.flops import Shapes, gemm_rates, rank_flops
from molorec.model import load_base, model_dtype
from molorec.predict import candidate_ids, prompt_ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/molorec-bench-fusion"))
    ap.add_argument("--model", default="tiny-qwen2", help="tiny-qwen2 | smollm2-135m")
    ap.add_argument("--precision", default="fp32", help="fp32 | bf16 (model.precision)")
    args = ap.parse_args()
    base = base_model(args.cache, args.model)
    data = sample_instructions(args.cache)
    model, tokenizer = load_base(str(base), dtype=model_dtype(args.precision, cuda=False))
    if args.model == "tiny-qwen2":  # random weights: an adapter makes it answer 5 titles
        from peft import PeftModel

        adapter = adapters(str(base), data, args.cache)[0]
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    print(f"{args.model}, {args.precision}, {torch.get_num_threads()} threads")
    folder = data.parent
    rows = scenario_examples(
        pl.read_parquet(folder / "examples.parquet"),
        pl.read_parquet(data),
        "test",
        "warm",
        args.examples,
    )
    titles = dict(pl.read_parquet(folder / "items.parquet").select("item", "title").iter_rows())
    timings = {}
    for backend in ("generate", "rank"):
        t = time.perf_counter()
        with torch.no_grad():
            preds = predict_llm(model, tokenizer, rows, titles, backend, args.max_new_tokens)
        timings[backend] = time.perf_counter() - t
        titles_out = (
            preds["output"].str.count_matches(r"\|\|").mean() + 1 if backend == "generate" else 30
        )
        print(
            f"{backend:>8}: {rows.height / timings[backend]:.2f} examples/s "
            f"({timings[backend]:.1f} s for {rows.height}; {titles_out:.1f} titles per answer)"
        )
    print(f"rank / generate: {timings['generate'] / timings['rank']:.1f}x examples/s")
    shapes = Shapes.of(model.config)
    prompts = [len(prompt_ids(tokenizer, msgs)) for msgs in rows["messages"]]
    flops = sum(
        rank_flops(
            shapes, n, [len(c) for c in candidate_ids(tokenizer, [titles[i] for i in cands])]
        )
        for n, cands in zip(prompts, rows["candidates"], strict=True)
    )
    achieved = flops / timings["rank"]
    prompt_rows = round(sum(prompts) / len(prompts))
    rates = gemm_rates(shapes, rows=prompt_rows)
    print(
        f"rank: {flops / rows.height / 1e9:.1f} GFLOP per example, {achieved / 1e9:,.0f} GFLOP/s"
        " = "
        + " | ".join(
            f"{achieved / rate:.1%} of {k} GEMM ({rate / 1e9:,.0f} GFLOP/s at {prompt_rows} rows)"
            for k, rate in rates.items()
        )
    )


if __name__ == "__main__":
    main()
