"""Cost plan: what a config will spend on GPUs, before it is submitted.

Counts per stage the tokens the GPU jobs process and the base-model loads, then turns them
into GPU-hours with a throughput table per GPU type (models/throughput.yaml, every figure
with its source). Counts come from the instruction sets where they exist (exact: the
model's tokenizer on the real prompts) or else from the domains' sizes
(models/domain_sizes.yaml: users and interactions of public datasets), with prompt lengths
estimated from the number of titles in a prompt.

    python -m molorec.cost --configfile config/paper.yaml [--results results]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml

from molorec.plan import GPU_RULES, SCENARIOS, domains_with_role, gpu_jobs
from molorec.settings import CONTROL_SETTINGS

HERE = Path(__file__).parent / "models"
THROUGHPUT = HERE / "throughput.yaml"
SIZES = HERE / "domain_sizes.yaml"


@dataclass
class Work:
    """GPU work of one stage: tokens by kind and base-model loads."""

    train: float = 0.0  # forward + backward tokens
    prefill: float = 0.0  # forward-only prompt tokens
    decode: float = 0.0  # generated tokens
    loads: int = 0
    notes: list[str] = field(default_factory=list)

    def hours(self, gpu: dict, load_seconds: float, decode_factor: float = 1.0) -> float:
        seconds = (
            self.train / gpu["train_tokens_per_s"]["value"]
            + self.prefill / gpu["prefill_tokens_per_s"]["value"]
            + self.decode / (gpu["decode_tokens_per_s"]["value"] * decode_factor)
            + self.loads * load_seconds
        )
        return seconds / 3600


@dataclass
class Lengths:
    """Token lengths of one domain's prompts and answers (means)."""

    train_prompt: float  # a training example's prompt (with its answer: + answer)
    eval_prompt: float  # a validation/test prompt
    answer: float
    title: float


def domain_counts(config: dict, domain: str, results: Path, sizes: dict) -> dict:
    """Examples per split and scenario of a domain: from examples.parquet, else its size."""
    path = results / "data" / domain / "examples.parquet"
    data = config["data"]
    if path.exists():
        ex = pl.read_parquet(path)

        def count(split: str, cold: bool) -> int:
            evaluated = pl.col("selection") if split == "val" else pl.col("held_out")
            return ex.filter(
                (pl.col("split") == split) & evaluated & (pl.col("cold") == cold)
            ).height

        return {
            "source": str(path),
            "train": ex.filter(~pl.col("held_out")).height,
            **{f"{sp}_{sc}": count(sp, sc == "cold") for sp in ("val", "test") for sc in SCENARIOS},
        }
    size = sizes["domains"].get(domain)
    if size is None:
        raise SystemExit(f"{domain}: no {path} and no size in {SIZES}: run the data stage first")
    users, interactions = size["users"], size["interactions"]
    role = config["domains"][domain]["role"]
    cold = data["cold_item_fraction"] if role == "target" else 0.0
    sel = data["selection_fraction"]
    # Train positions 1..n-3 per user; domain_train_samples of them are sampled.
    train_positions = max(interactions - 3 * users, 0)
    train = min(train_positions, data["domain_train_samples"]) if role == "target" else 0
    val_trained = users * (1 - sel) * (1 - cold)
    return {
        "source": f"{SIZES.name} ({sizes['source']})",
        "train": train + val_trained,
        "val_warm": users * sel * (1 - cold),
        "val_cold": users * sel * cold,
        "test_warm": users * (1 - cold) if role == "target" else 0,
        "test_cold": users * cold if role == "target" else 0,
    }


def lengths_of(config: dict, domain: str, results: Path, tokenizer, sizes: dict) -> Lengths:
    """Mean token lengths: measured on the instruction set, else estimated from titles."""
    path = results / "data" / domain / "instructions.parquet"
    if path.exists() and tokenizer is not None:
        rows = pl.read_parquet(path).head(2000)  # a mean; the first rows suffice
        turns = rows["messages"].to_list()
        prompt = [n_tokens(tokenizer, [m for m in t if m["role"] != "assistant"]) for t in turns]
        answer = [n_tokens(tokenizer, [m for m in t if m["role"] == "assistant"]) for t in turns]
        split = rows["split"].to_list()
        trained = [p for p, s in zip(prompt, split, strict=True) if s == "train"] or prompt
        held = [p for p, s in zip(prompt, split, strict=True) if s != "train"] or prompt
        title = _mean(answer) / config["data"]["answer_size"]
        return Lengths(_mean(trained), _mean(held), _mean(answer), title)
    data, est = config["data"], sizes["estimate"]
    size = sizes["domains"][domain]
    per_user = size["interactions"] / size["users"]
    history = min(per_user - 2, data["max_history"])
    title = est["title_tokens"]["value"]
    template = est["template_tokens"]["value"]
    prompt = template + (history + data["n_candidates"]) * (title + 1)  # + a separator each
    train_history = min(per_user / 2, data["max_history"])
    train_prompt = template + (train_history + data["n_candidates"]) * (title + 1)
    return Lengths(train_prompt, prompt, data["answer_size"] * (title + 1), title)


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


def n_tokens(tokenizer, messages: list[dict]) -> int:
    if not messages:
        return 0
    return len(
        tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    )


def plan(config: dict, results: Path, tokenizer=None) -> dict[str, Work]:
    """Work per stage (train, fusion, evaluate) for the config."""
    sizes = yaml.safe_load(SIZES.read_text())
    roles = {d: s["role"] for d, s in config["domains"].items()}
    train_cfg, fusion, evaluate = config["train"], config["fusion"], config["evaluate"]
    work = {"train": Work(), "fusion": Work(), "evaluate": Work()}
    lengths = {d: lengths_of(config, d, results, tokenizer, sizes) for d in roles}
    counts = {d: domain_counts(config, d, results, sizes) for d in roles}

    def epochs(kind: str, examples: float, length: float) -> float:
        s = {**train_cfg, **train_cfg.get(kind, {})}
        batch = s["per_device_batch"] * s["grad_accum"]
        if s["max_rows"] > 0:  # molorec.train.training_rows: a fixed subset
            examples = min(examples, s["max_rows"])
        seen = examples * s["epochs"]
        if s["max_steps"] > 0:
            seen = min(seen, s["max_steps"] * batch)
        return seen * min(length, s["max_length"])

    # evaluate.order_check: every LLM evaluation again with the candidates re-ordered
    orders = 1 if evaluate["order_check"] == "none" else 2
    for job in gpu_jobs(config):  # one base-model load each
        d, sc = job.domain, job.scenario
        w = work[GPU_RULES[job.rule]]
        w.loads += 1
        if job.rule == "train_general_adapter":
            general = domains_with_role(config, "general")
            pooled = sum(counts[g]["train"] for g in general)
            mean = sum(
                counts[g]["train"] * (lengths[g].train_prompt + lengths[g].answer) for g in general
            )
            w.train += epochs("general", pooled, mean / max(pooled, 1))
            continue
        n, ln = counts[d], lengths[d]
        if job.rule == "train_domain_adapter":
            w.train += epochs("domain", n["train"], ln.train_prompt + ln.answer)
        elif job.rule in ("fuse_adapters", "fuse_control"):
            control = CONTROL_SETTINGS.get(job.grid, {})
            adapt_on = control.get("adapt_on", fusion["adapt_on"])
            answer = min(ln.answer, fusion["max_new_tokens"])
            prompts = min(fusion["n_prompts"][sc], n[f"{adapt_on}_{sc}"] or 0)
            runs = len(job.variants) * fusion["steps"]
            if control.get("objective", "entropy") == "entropy":
                # greedy answers: prompt, then decode
                w.prefill += runs * prompts * ln.eval_prompt
                w.decode += runs * prompts * answer
            w.train += runs * prompts * (ln.eval_prompt + answer)  # the scored pass, with grad
        elif job.rule.startswith("evaluate"):  # merges load the model only
            rows = n[f"{job.split}_{sc}"]
            if evaluate["max_examples"] > 0:
                rows = min(rows, evaluate["max_examples"])
            passes = orders * len(job.variants) * rows
            if evaluate["backend"] == "rank":
                candidates = config["data"]["n_candidates"] * (ln.title + 1)
                w.prefill += passes * (ln.eval_prompt + candidates)
            else:
                w.prefill += passes * ln.eval_prompt
                w.decode += passes * min(ln.answer, evaluate["max_new_tokens"])
    sources = {c["source"] for c in counts.values()}
    work["train"].notes = sorted(sources)
    return work


def table(work: dict[str, Work], gpus: dict, load_seconds: float, hf_factor: float) -> pl.DataFrame:
    """Tokens, loads and GPU-hours per stage. Fusion decodes with HF generate, and so does
    the evaluation unless it runs on vLLM: hf_factor scales the (vLLM) decode rate."""
    rows = []
    for stage, w in work.items():
        row = {
            "stage": stage,
            "train_tokens_M": round(w.train / 1e6, 1),
            "prefill_tokens_M": round(w.prefill / 1e6, 1),
            "decode_tokens_M": round(w.decode / 1e6, 2),
            "model_loads": w.loads,
        }
        for name, gpu in gpus.items():
            factor = 1.0 if stage == "evaluate_vllm" else hf_factor
            row[f"{name}_gpu_hours"] = round(w.hours(gpu, load_seconds, factor), 1)
        rows.append(row)
    df = pl.DataFrame(rows)
    total = {c: (df[c].sum() if c != "stage" else "total") for c in df.columns}
    return pl.concat([df, pl.DataFrame([total], schema=df.schema)])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="GPU cost plan of a molorec config")
    ap.add_argument("--configfile", default="config.yaml")
    ap.add_argument("--results", default="results", type=Path)
    ap.add_argument("--tokenizer", help="a tokenizer to measure the instruction sets with")
    ap.add_argument("--load-seconds", type=float, help="one base-model load (default: the table's)")
    args = ap.parse_args(argv)
    from molorec.config import check_config

    config = yaml.safe_load(Path(args.configfile).read_text())
    config = check_config(config, base_dir=".", inputs=False)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    throughput = yaml.safe_load(THROUGHPUT.read_text())
    work = plan(config, args.results, tokenizer)
    load = throughput["model_load_seconds"]
    seconds = args.load_seconds if args.load_seconds is not None else load["value"]
    hf = throughput["hf_decode_factor"]
    if config["evaluate"]["backend"] == "vllm":
        work["evaluate_vllm"] = work.pop("evaluate")
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        tbl_cols=-1,
        tbl_width_chars=300,
    ):
        print(table(work, throughput["gpus"], seconds, hf["value"]))
    print("counts from:", "; ".join(work["train"].notes))
    print(f"model load: {seconds:g} s each ({load['source']})")
    print(f"HF generate decodes at {hf['value']} x vLLM's rate ({hf['source']})")
    for name, gpu in throughput["gpus"].items():
        for key in ("train_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s"):
            print(f"{name} {key} = {gpu[key]['value']}: {gpu[key]['source']}")


if __name__ == "__main__":
    main()
