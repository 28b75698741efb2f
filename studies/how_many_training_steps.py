"""How many training steps a domain adapter needs: HR@1 against optimizer steps, measured on
training rows held back from the adapter (never on test examples).

A finished default run's data and base model are used (``--results``). The domain's
training rows (``molorec.train.training_rows``) are shuffled; the first ``--held-back``
are kept out, the adapter trains on the rest with a constant learning rate (batch 8, LoRA
as config.yaml; bf16 autocast where the CPU has it), and after each of ``--checks`` steps
the held-back rows are ranked with the `rank` backend. Printed: steps, training loss,
HR@1 and HR@3 on the held-back rows, seconds so far.

    python studies/how_many_training_steps.py --results /tmp/molorec-quickstart/results
                                     [--domain beauty] [--lr 1e-3] [--checks 0,8,16,32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
import torch
from peft import LoraConfig, get_peft_model

from molorec.model import load_base, native_cpu_bf16
from molorec.predict import candidate_ids, prompt_ids, rank_candidates
from molorec.train import answer_loss, collate, encode, training_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="the results/ folder of a default run")
    ap.add_argument("--domain", default="beauty")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--checks", default="0,8,16,32")
    ap.add_argument("--held-back", type=int, default=54)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    checks = [int(c) for c in args.checks.split(",")]
    torch.manual_seed(args.seed)
    data = f"{args.results}/data/{args.domain}"
    keys = ["user", "split", "position"]
    rows = training_rows(pl.read_parquet(f"{data}/instructions.parquet"))
    rows = rows.sample(fraction=1.0, shuffle=True, seed=args.seed)
    held, train = rows.head(args.held_back), rows.slice(args.held_back)
    candidates = pl.read_parquet(f"{data}/examples.parquet").select(*keys, "candidates")
    held = held.join(candidates, on=keys, how="left", maintain_order="left")
    titles = dict(pl.read_parquet(f"{data}/items.parquet").select("item", "title").iter_rows())

    model, tokenizer = load_base(f"{args.results}/models/smollm2-135m")
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")
    model = get_peft_model(model, lora)
    encoded, _ = encode(tokenizer, train["messages"].to_list(), 1200)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    bf16 = native_cpu_bf16()

    def held_back_ranks() -> np.ndarray:
        model.eval()
        ranks = []
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for messages, cands, target in held.select("messages", "candidates", "target").rows():
                scores = rank_candidates(
                    model,
                    prompt_ids(tokenizer, messages),
                    candidate_ids(tokenizer, [titles[c] for c in cands]),
                )
                order = torch.argsort(scores, descending=True, stable=True).tolist()
                ranks.append([cands[i] for i in order].index(target))
        model.train()
        return np.array(ranks)

    print(
        f"{args.domain}: {train.height} training rows, {held.height} held back; "
        f"lr {args.lr} constant, batch 8, {'bf16 autocast' if bf16 else 'fp32'}"
    )
    rng = np.random.default_rng(args.seed)
    queue: list[int] = []
    step, loss, t0 = 0, float("nan"), time.perf_counter()
    for check in checks:
        while step < check:
            if len(queue) < 8:
                queue += rng.permutation(len(encoded)).tolist()
            batch, queue = queue[:8], queue[8:]
            optimizer.zero_grad()
            total, tokens = 0.0, 0
            for lo in range(0, 8, 2):
                micro = collate(
                    [encoded[i] for i in batch[lo : lo + 2]], tokenizer.pad_token_id, "cpu"
                )
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    summed, n = answer_loss(model, micro)
                summed.backward()
                total, tokens = total + summed.item(), tokens + n
            for p in trainable:
                p.grad /= tokens
            optimizer.step()
            step, loss = step + 1, total / tokens
        ranks = held_back_ranks()
        print(
            f"step {step:3d}  loss {loss:.3f}  HR@1 {np.mean(ranks == 0):.3f}  "
            f"HR@3 {np.mean(ranks < 3):.3f}  {time.perf_counter() - t0:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
