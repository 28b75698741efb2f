"""Fusion objective benchmark: seconds per adapted prompt, ours against the original scheme.

Ours: the greedy answer generated once with the KV cache and no gradient, then one forward
pass with gradient that scores every chosen position (LM head only there). The original:
greedy decoding that recomputes the whole sequence for each new token, then a full forward
and backward without cache for every scored token. Same tiny model (real Qwen vocabulary),
same two adapters, same prompts (the bundled sample's Beauty test prompts), k = 5, answers
of 5 titles; the gradients are compared too.

Then the pooled schedule (``fusion.adapt``, a step per --tokens-per-step scored tokens as
the sample's config), four ways, alternating, in the same process: answers drafted at the
starting weights and checked by one forward pass (``greedy_from_draft``), decoded past a
disagreement with guesses copied from the prompt (``LOOKUP_TOKENS``, the default); the
same, decoded token by token with the KV cache past a disagreement; every answer decoded
token by token (the way before drafts); drafts and lookup with decoding through merged
weights (``merge_for_decoding``). Seconds per adapted prompt (drafting included), the
median ratio to token by token, and whether the trajectories agree. With
--model smollm2-135m --adapters GENERAL DOMAIN it runs on a pipeline's own adapters.

    python benchmarks/bench_fusion.py [--prompts 4] [--k 5] [--model tiny-qwen2]
                                      [--adapters GENERAL DOMAIN] [--repeats 2] [--threads 1]
                                      [--precision fp32|bf16] [--schedule-only]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import polars as pl
import torch

import molorec.fusion as fusion
from molorec.fusion import adapt, answer_entropy, greedy_answers, separator_ids
from molorec.mixture import LoraAdapter, Mixture
from molorec.model import load_base
from molorec.original import original_gradient
from molorec.sample.prepare import base_model, data_stage, sample_spec
from molorec.settings import FusionSettings, TrainSettings
from molorec.train import train


def sample_instructions(cache: Path) -> Path:
    """The bundled sample's Beauty instruction set, built with the library."""
    out = cache / "beauty"
    if not (out / "instructions.parquet").exists():
        # The sample's one bad meta line is within config.yaml's max_malformed_fraction.
        data_stage(sample_spec("beauty"), out, "beauty", max_malformed_fraction=0.01)
    return out / "instructions.parquet"


def adapters(base: str, prompts_file: Path, cache: Path) -> list[str]:
    """A general-like adapter that answers the test prompts with 5 titles (memorised), and
    a domain-like adapter trained on other examples."""
    s = TrainSettings(
        lr=1e-2,
        per_device_batch=4,
        grad_accum=1,
        max_steps=300,
        warmup_ratio=0.0,
        save_every=0,
        epochs=1000,
        lora_dropout=0.0,
    )
    paths = []
    for name, split in (("memorised", "test"), ("other", "train")):
        out = cache / name
        if not (out / "adapter_model.safetensors").exists():
            df = pl.read_parquet(prompts_file).filter(pl.col("split") == split).head(4)
            df = df.with_columns(split=pl.lit("train"), held_out=pl.lit(False))  # trained on
            df.write_parquet(cache / f"{name}.parquet")
            train(
                base,
                [str(cache / f"{name}.parquet")],
                "domain",
                out,
                cache / f"ck-{name}",
                s,
                progress=False,
            )
        paths.append(str(out))
    return paths


def compare_with_original(mixture, tokenizer, prompts, k: int, max_new_tokens: int) -> None:
    """Seconds per prompt and the gradient, ours against the original's scheme."""
    separators = separator_ids(tokenizer)
    ours_s, ref_s, tokens, titles, worst = 0.0, 0.0, 0, 0, 0.0
    for p in prompts:
        t = time.perf_counter()
        mixture.mixing.theta.grad = None
        scored = greedy_answers(mixture, tokenizer, [p], k, max_new_tokens, separators)
        answer_entropy(mixture, scored).backward()
        ours_s += time.perf_counter() - t
        ours = mixture.mixing.theta.grad.clone()
        t = time.perf_counter()
        ref = original_gradient(mixture, tokenizer, [p], k, max_new_tokens)
        ref_s += time.perf_counter() - t
        tokens += len(scored.rows)
        titles += tokenizer.decode(scored.answers[0]).count("||") + 1
        worst = max(worst, float((ours - ref).abs().max() / ref.abs().max()))
    n = len(prompts)
    print(
        f"{n} prompts, {titles / n:.1f} titles and {tokens / n:.1f} scored tokens per answer "
        f"(k = {k}), prompts of ~{scored.input_ids.shape[1] - len(scored.answers[0])} tokens"
    )
    print(f"ours (cached generation + one scoring pass): {ours_s / n:.3f} s per prompt")
    print(f"original (token by token, no cache):        {ref_s / n:.3f} s per prompt")
    print(f"speed-up {ref_s / ours_s:.1f}x; max relative gradient difference {worst:.2e}")


def decode_afresh(mixture, ids, draft, decided, max_new_tokens, stop):
    """The pooled schedule's decoding before drafts: the answer after its fixed prefix
    decoded token by token with the KV cache, the draft ignored."""
    prefix = draft[:decided]
    return prefix + fusion.greedy_continuation(mixture, ids, prefix, max_new_tokens, stop), 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/molorec-bench-fusion"))
    ap.add_argument("--model", default="tiny-qwen2", help="a base model the pipeline builds")
    ap.add_argument("--adapters", nargs=2, help="general and domain adapter (default: trained)")
    ap.add_argument("--tokens-per-step", type=int, default=14, help="the sample's config")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each way")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (fuse jobs': 1)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--schedule-only", action="store_true", help="skip the original's scheme")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = base_model(args.cache, args.model)
    data = sample_instructions(args.cache)
    pair = args.adapters or adapters(str(base), data, args.cache)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    model, tokenizer = load_base(str(base), dtype=dtype)
    mixture = Mixture(model, [LoraAdapter.load(p) for p in pair])
    rows = pl.read_parquet(data).filter(pl.col("split") == "test").head(args.prompts)
    prompts = [[m for m in msgs if m["role"] != "assistant"] for msgs in rows["messages"]]
    n = len(prompts)
    if not args.schedule_only:
        compare_with_original(mixture, tokenizer, prompts, args.k, args.max_new_tokens)

    settings = FusionSettings(
        k=args.k,
        max_new_tokens=args.max_new_tokens,
        tokens_per_backward=args.tokens_per_step,
        accumulation=1,
    )
    lookup = fusion.LOOKUP_TOKENS
    ways = {  # how an answer is found; decoding through merged weights; prompt lookup
        "drafts, lookup": (fusion.greedy_from_draft, False, lookup),
        "drafts, token by token": (fusion.greedy_from_draft, False, 0),
        "token by token": (decode_afresh, False, 0),
        "drafts, lookup, merged": (fusion.greedy_from_draft, True, lookup),
    }
    seconds = {way: [] for way in ways}
    steps, weights = {}, {}
    for _ in range(args.repeats):
        for way, (answer_of, merge, guesses) in ways.items():
            fusion.greedy_from_draft, fusion.LOOKUP_TOKENS = answer_of, guesses
            for layer in mixture.layers.values():
                layer.merge_for_decoding = merge
            with torch.no_grad():
                mixture.mixing.theta.zero_()
            t = time.perf_counter()
            trajectory = adapt(mixture, tokenizer, prompts, settings)  # drafts included
            seconds[way].append((time.perf_counter() - t) / n)
            steps[way] = [(r["optimizer_steps"], r["scored_tokens"]) for r in trajectory]
            weights[way] = mixture.mixing.weights().detach().clone()
    fusion.greedy_from_draft, fusion.LOOKUP_TOKENS = ways["drafts, lookup"][0], lookup
    print(
        f"pooled schedule ({args.tokens_per_step} scored tokens per step, {n} prompts), "
        f"median of {args.repeats} runs, seconds per adapted prompt:"
    )
    reference = statistics.median(seconds["token by token"])
    for way in ways:
        median = statistics.median(seconds[way])
        same = steps[way] == steps["token by token"]
        gap = float((weights[way] - weights["token by token"]).abs().max())
        print(
            f"  {way:32s} {median:6.2f} s  {reference / median:5.2f}x of token by token; "
            f"same steps and scored tokens: {same}; max weight difference {gap:.1e}"
        )


if __name__ == "__main__":
    main()
