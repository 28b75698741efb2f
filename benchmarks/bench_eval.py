"""Prediction backends benchmark: examples per second of `rank` against `generate`.

Same model -- tiny-qwen2 (real Qwen vocabulary) with an adapter that answers with 5 titles,
or the real smollm2-135m as it is (--model smollm2-135m; answers capped at --max-new-tokens) -- same
test examples of the bundled sample's Beauty domain, same run. `generate` decodes the
answer greedily (batched, left padding) and parses it; `rank` scores the 30 candidates
by log-likelihood with the prompt's KV cache shared.

For `rank` it also prints the model FLOP/s (molorec.flops.rank_flops of every example over
the time) as a share of this machine's bf16 and fp32 ``torch.matmul`` rate at the model's
projection shapes, measured in the same run. Then `rank` with several examples per forward
pass (``--batch-sizes``: evaluate.batch_size) against one at a time, alternating, in the
same process: examples/s, the median ratio, and whether the rankings are the same; and
`rank` with transformers' SDPA attention (before) against molorec's blocked attention
(after, the CPU default), alternating, with the GEMM share of each.
``--data`` ranks a pipeline's own examples instead (e.g. the quick start's
results/data/beauty: 10 candidates, the eval jobs' one thread with --threads 1).

    python benchmarks/bench_eval.py [--examples 16] [--model smollm2-135m] [--precision bf16]
                                    [--batch-sizes 1 8] [--repeats 3] [--threads N]
                                    [--data results/data/beauty] [--rank-only]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl
import torch
from bench_fusion import adapters, sample_instructions
from peft import PeftModel

from molorec.attention import NAME as BLOCKED
from molorec.evaluate import predict_llm, scenario_examples
from molorec.flops import Shapes, gemm_rates, rank_flops
from molorec.model import load_base, model_dtype
from molorec.predict import candidate_ids, prompt_ids
from molorec.sample.prepare import base_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/molorec-bench-fusion"))
    ap.add_argument("--model", default="tiny-qwen2", help="tiny-qwen2 | smollm2-135m")
    ap.add_argument("--precision", default="fp32", help="fp32 | bf16 (model.precision)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--data", type=Path, help="a pipeline's results/data/<domain> folder")
    ap.add_argument("--rank-only", action="store_true", help="skip generate")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = base_model(args.cache, args.model)
    data = args.data / "instructions.parquet" if args.data else sample_instructions(args.cache)
    model, tokenizer = load_base(str(base), dtype=model_dtype(args.precision, cuda=False))
    if args.model == "tiny-qwen2":  # random weights: an adapter makes it answer 5 titles
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
    timings, batch = {}, 8  # evaluate.batch_size's default
    for backend in ("rank",) if args.rank_only else ("generate", "rank"):
        t = time.perf_counter()
        with torch.no_grad():
            preds = predict_llm(model, tokenizer, rows, titles, backend, args.max_new_tokens, batch)
        timings[backend] = time.perf_counter() - t
        if backend == "generate":
            titles_out = preds["output"].str.count_matches(r"\|\|").mean() + 1
            answers = f"{titles_out:.1f} titles per answer"
        else:
            answers = f"{len(rows['candidates'][0])} candidates"
        print(
            f"{backend:>8} (batch {batch}): {rows.height / timings[backend]:.2f} examples/s "
            f"({timings[backend]:.1f} s for {rows.height}; {answers})"
        )
    if not args.rank_only:
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

    compare_attention(model, tokenizer, rows, titles, batch, args.repeats, flops, rates)

    exact = None
    if args.precision == "bf16":  # bf16 rounds: a float32 copy's rankings are the reference
        fp32, _ = load_base(str(base), dtype=torch.float32)
        if args.model == "tiny-qwen2":
            fp32 = PeftModel.from_pretrained(fp32, adapter).merge_and_unload()
        with torch.no_grad():
            exact = predict_llm(fp32.eval(), tokenizer, rows, titles, "rank", batch_size=1)
        exact = exact["ranking"].to_list()
        del fp32
    compare_batch_sizes(model, tokenizer, rows, titles, args.batch_sizes, args.repeats, exact)


def agree(x: list, y: list) -> str:
    """How often two lists of rankings agree: the full order, and the first candidate."""
    n = len(x)
    full = sum(a == b for a, b in zip(x, y, strict=True))
    top = sum(a[0] == b[0] for a, b in zip(x, y, strict=True))
    return f"order {full}/{n}, top-1 {top}/{n}"


def compare_attention(
    model, tokenizer, rows, titles, batch: int, repeats: int, flops: float, rates
) -> None:
    """`rank` with transformers' SDPA attention (before) and molorec's blocked attention
    (after, the CPU default), alternating in the same process: examples/s, the share of
    the GEMM rate, and whether the rankings are the same."""
    import statistics

    seconds, rankings = {}, {}
    for _ in range(repeats):
        for impl in ("sdpa", BLOCKED):
            model.set_attn_implementation(impl)
            t = time.perf_counter()
            with torch.no_grad():
                preds = predict_llm(model, tokenizer, rows, titles, "rank", batch_size=batch)
            seconds.setdefault(impl, []).append(time.perf_counter() - t)
            rankings[impl] = preds["ranking"].to_list()
    model.set_attn_implementation(BLOCKED)
    n = rows.height
    median = {impl: statistics.median(v) for impl, v in seconds.items()}
    print(
        f"rank attention (median of {repeats}, batch {batch}): SDPA {n / median['sdpa']:.2f} -> "
        f"blocked {n / median[BLOCKED]:.2f} examples/s = "
        f"{median['sdpa'] / median[BLOCKED]:.2f}x; "
        + " | ".join(
            f"{k} GEMM share {flops / median['sdpa'] / r:.1%} -> {flops / median[BLOCKED] / r:.1%}"
            for k, r in rates.items()
        )
        + f"; same rankings: {agree(rankings['sdpa'], rankings[BLOCKED])}"
    )


def compare_batch_sizes(
    model, tokenizer, rows, titles, sizes: list[int], repeats: int, exact=None
) -> None:
    """`rank` at each batch size, alternating. Rankings are compared with the first size's,
    and in bf16 with the float32 model's: both bf16 paths round, each in its own way."""
    import statistics

    seconds, rankings = {b: [] for b in sizes}, {}
    for _ in range(repeats):
        for b in sizes:
            t = time.perf_counter()
            with torch.no_grad():
                preds = predict_llm(model, tokenizer, rows, titles, "rank", batch_size=b)
            seconds[b].append(time.perf_counter() - t)
            rankings[b] = preds["ranking"].to_list()
    reference = statistics.median(seconds[sizes[0]])
    n = rows.height
    print(f"rank, examples per forward pass (median of {repeats}, {n} examples):")
    for b in sizes:
        median = statistics.median(seconds[b])
        line = (
            f"  batch {b:3d}: {n / median:.2f} examples/s, {reference / median:.2f}x of batch "
            f"{sizes[0]}; same as batch {sizes[0]}: {agree(rankings[b], rankings[sizes[0]])}"
        )
        if exact is not None:
            line += f"; same as float32: {agree(rankings[b], exact)}"
        print(line)


if __name__ == "__main__":
    main()
