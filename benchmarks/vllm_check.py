"""vLLM against HF generate on the same prompts, greedy, same stop tokens: one variant of
one domain (GPU machines with vllm installed). Prints examples/s of each and how many
rankings agree exactly.

    python benchmarks/vllm_check.py --workdir /tmp/molorec-gpu [--domain beauty] [--variant domain]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl
import torch

from molorec.evaluate import predict_llm, predict_vllm, scenario_examples
from molorec.model import load_base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--domain", default="beauty")
    ap.add_argument("--variant", default="domain", help="domain | general | uniform")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    args = ap.parse_args()
    results = args.workdir / "results"
    base = str(next((results / "models").iterdir()))
    adapter = {
        "domain": results / "adapters" / args.domain,
        "general": results / "adapters/general",
        "uniform": results / "fusion" / args.domain / "uniform/adapter",
    }[args.variant]
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
    served = predict_vllm(base, str(adapter), rows, titles, args.max_new_tokens)
    vllm_s = time.perf_counter() - t

    from peft import PeftModel

    model, tokenizer = load_base(base, dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().to("cuda").eval()
    t = time.perf_counter()
    hf = predict_llm(model, tokenizer, rows, titles, "generate", args.max_new_tokens, 16)
    hf_s = time.perf_counter() - t
    same = sum(a == b for a, b in zip(served["ranking"], hf["ranking"], strict=True))
    print(
        f"{args.domain}/{args.variant}, {rows.height} warm test prompts: vllm "
        f"{rows.height / vllm_s:.1f} examples/s (with engine start), HF generate "
        f"{rows.height / hf_s:.1f} examples/s; identical rankings {same}/{rows.height}"
    )


if __name__ == "__main__":
    main()
