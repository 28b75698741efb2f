"""vLLM against HF generate on the same prompts, greedy, same stop tokens: every LLM variant
of one domain's warm test set, the fused adapters included, served by one vLLM engine as
LoRA requests (GPU machines with vllm installed). Prints examples/s of each and, per
variant, how many rankings agree exactly.

    python benchmarks/vllm_check.py --workdir /tmp/molorec-gpu [--domain beauty]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl

from molorec.evaluate import predict_variants, predict_vllm_variants, scenario_examples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--domain", default="beauty")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    args = ap.parse_args()
    results = args.workdir / "results"
    base = str(next((results / "models").iterdir()))
    fusion = results / "fusion" / args.domain
    adapters = {
        "base": None,
        "general": str(results / "adapters/general"),
        "domain": str(results / "adapters" / args.domain),
        "uniform": str(fusion / "uniform"),
        **{p.name: str(p) for p in sorted((fusion / "warm").glob("lr*"))},
    }
    data = results / "data" / args.domain
    rows = scenario_examples(
        pl.read_parquet(data / "examples.parquet"),
        pl.read_parquet(data / "instructions.parquet"),
        "test",
        "warm",
        args.examples,
    )
    titles = dict(pl.read_parquet(data / "items.parquet").select("item", "title").iter_rows())

    t = time.perf_counter()
    served = predict_vllm_variants(base, adapters, rows, titles, args.max_new_tokens)
    vllm_s = time.perf_counter() - t
    settings = {
        "backend": "generate",
        "max_new_tokens": args.max_new_tokens,
        "batch_size": 16,
        "normalised_match": False,
    }
    t = time.perf_counter()
    hf = dict(predict_variants(base, adapters, rows, titles, settings))
    hf_s = time.perf_counter() - t
    n = rows.height * len(adapters)
    print(
        f"{args.domain}, {rows.height} warm test prompts x {len(adapters)} variants: one vLLM "
        f"engine {n / vllm_s:.1f} examples/s (with engine start), HF generate "
        f"{n / hf_s:.1f} examples/s (one model load)"
    )
    for variant in adapters:
        same = sum(
            a == b for a, b in zip(served[variant]["ranking"], hf[variant]["ranking"], strict=True)
        )
        print(f"  {variant}: identical rankings {same}/{rows.height}")


if __name__ == "__main__":
    main()
