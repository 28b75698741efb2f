"""Evaluation of one variant on one (domain, scenario, split): predictions and metrics.

LLM variants (base, general, domain, uniform, molorec) rank the candidates with a
prediction backend; the baselines score them from the domain's training sequences. All
variants see exactly the same examples and candidates.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from molorec.baselines import BASELINES, rank
from molorec.io.parquet import write_json, write_parquet
from molorec.metrics import summarise, target_rank

PREDICTION_SCHEMA = {
    "user": pl.String,
    "target": pl.String,
    "ranking": pl.List(pl.String),
    "output": pl.String,
    "n_invalid": pl.Int32,
    "n_duplicate": pl.Int32,
}


def scenario_examples(
    examples: pl.DataFrame,
    instructions: pl.DataFrame,
    split: str,
    scenario: str,
    max_examples: int = 0,
) -> pl.DataFrame:
    """The examples of one split and scenario (warm: warm targets, cold: cold targets) that
    are evaluated, with their messages; the first ``max_examples`` in file order when > 0.
    For ``val`` that is the selection set (molorec.data.examples): no adapter trained on it."""
    keys = ["user", "split", "position"]
    evaluated = pl.col("selection") if split == "val" else pl.col("held_out")
    rows = examples.filter(
        (pl.col("split") == split) & evaluated & (pl.col("cold") == (scenario == "cold"))
    )
    rows = rows.join(
        instructions.select(*keys, "messages"), on=keys, how="left", maintain_order="left"
    )
    return rows.head(max_examples) if max_examples > 0 else rows


def training_sequences(
    examples: pl.DataFrame, interactions: pl.DataFrame, cold: set[str]
) -> list[list[str]]:
    """What the baselines learn from: the items the adapters may train on. Each user's items
    before their first held-out example (a selection user's validation target, else the
    test target), without the cold items (molorec.data.examples.cold_items)."""
    first_held_out = (
        examples.filter(pl.col("held_out")).group_by("user").agg(pl.col("position").min())
    )
    seqs = (
        interactions.with_columns(pos=pl.int_range(pl.len()).over("user"))
        .join(first_held_out, on="user", how="left")
        .filter(pl.col("position").is_null() | (pl.col("pos") < pl.col("position")))
        .filter(~pl.col("item").is_in(list(cold)))
        .group_by("user", maintain_order=True)
        .agg("item")
    )
    return seqs["item"].to_list()


def predict_baseline(name: str, rows: pl.DataFrame, data, seed: int) -> pl.DataFrame:
    """Rank every row's candidates with baseline ``name`` fitted on ``data``
    (molorec.baselines.TrainingData, from baseline_training_data)."""
    model = BASELINES[name](seed=seed).fit(data)

    rankings = [
        rank(model, h, c, key=f"{u}|{p}")
        for u, p, h, c in rows.select("user", "position", "history", "candidates").iter_rows()
    ]
    return _predictions(rows, rankings, [None] * rows.height, [0] * rows.height, [0] * rows.height)


def predict_llm(
    model,
    tokenizer,
    rows: pl.DataFrame,
    titles: dict[str, str],
    backend: str,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    normalised: bool = False,
) -> pl.DataFrame:
    """Rank the candidates of every row with the model (an adapter already applied)."""
    import torch

    from molorec.predict import candidate_ids, generate_texts, prompt_ids, rank_candidates

    candidates = rows["candidates"].to_list()
    if backend == "generate":
        prompts = [[m for m in msgs if m["role"] != "assistant"] for msgs in rows["messages"]]
        texts = generate_texts(model, tokenizer, prompts, max_new_tokens, batch_size)
        return _parsed_predictions(rows, texts, titles, normalised)
    if backend == "rank":
        rankings = []
        for msgs, cands in zip(rows["messages"], candidates, strict=True):
            scores = rank_candidates(
                model,
                prompt_ids(tokenizer, msgs),
                candidate_ids(tokenizer, [titles[c] for c in cands]),
            )
            order = torch.argsort(scores, descending=True, stable=True).tolist()
            rankings.append([cands[i] for i in order])
        n = rows.height
        return _predictions(rows, rankings, [None] * n, [0] * n, [0] * n)
    raise ValueError(f"predict.backend {backend!r}: generate | rank | vllm")


def predict_vllm(
    base: str,
    adapter: str | None,
    rows: pl.DataFrame,
    titles: dict[str, str],
    max_new_tokens: int,
    normalised: bool = False,
) -> pl.DataFrame:
    """One variant served by vLLM (predict_vllm_variants with a single adapter)."""
    return predict_vllm_variants(
        base, {"variant": adapter}, rows, titles, max_new_tokens, normalised
    )["variant"]


def adapter_weights(path: str | None) -> str | None:
    """The PEFT folder of a variant's adapter: fusion folders hold it under adapter/."""
    if path and (Path(path) / "adapter").is_dir():
        return str(Path(path) / "adapter")
    return path


def predict_variants(
    base: str, adapters: dict[str, str | None], rows: pl.DataFrame, titles: dict, s: dict
):
    """Every LLM variant of one (domain, scenario, split) from one load of the base model:
    yields (variant, predictions) in the order given. An adapter is merged into the base
    weights for its variant, then the base weights are restored from a saved copy (not by
    unmerging, which rounds): each variant starts from the very weights a job of its own
    would load, so its predictions are byte-identical to that job's."""
    if s["backend"] == "vllm":
        yield from predict_vllm_variants(
            base, adapters, rows, titles, s["max_new_tokens"], s["normalised_match"]
        ).items()
        return
    import torch
    from peft import PeftModel

    from molorec.model import load_base, model_dtype

    cuda = torch.cuda.is_available()
    model, tokenizer = load_base(base, dtype=model_dtype(s.get("precision", "auto"), cuda))
    model.to("cuda" if cuda else "cpu").eval()
    pristine = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    for variant, adapter in adapters.items():
        merged = model
        if adapter:
            # Merged once: every prediction then runs at the base model's speed.
            merged = PeftModel.from_pretrained(model, adapter_weights(adapter)).merge_and_unload()
        yield (
            variant,
            predict_llm(
                merged,
                tokenizer,
                rows,
                titles,
                s["backend"],
                s["max_new_tokens"],
                s["batch_size"],
                s["normalised_match"],
            ),
        )
        if adapter:
            model.load_state_dict(pristine)
            if hasattr(model, "peft_config"):  # left by peft's injection: a clean model
                del model.peft_config


def lora_requests(adapters: dict[str, str | None]) -> dict[str, tuple[str, int, str] | None]:
    """vLLM LoRARequest arguments per variant: a name and an id of its own for every
    adapter (vLLM caches prefixes per adapter, so two adapters must never share either),
    None for the base model."""
    requests, next_id = {}, 1
    for variant, adapter in adapters.items():
        if adapter is None:
            requests[variant] = None
            continue
        requests[variant] = (f"{variant}-{next_id}", next_id, adapter_weights(adapter))
        next_id += 1
    return requests


def vllm_engine_args(requests: dict[str, tuple[str, int, str] | None]) -> dict:
    """LoRA settings of the one engine that serves every request: room for all adapters at
    once, and a rank limit that holds the largest (a fused adapter's r_general + r_domain)."""
    loras = [r for r in requests.values() if r is not None]
    return {
        "enable_lora": bool(loras),
        "max_loras": max(1, len(loras)),
        "max_lora_rank": max((vllm_lora_rank(r[2]) for r in loras), default=16),
    }


def predict_vllm_variants(
    base: str,
    adapters: dict[str, str | None],
    rows: pl.DataFrame,
    titles: dict[str, str],
    max_new_tokens: int,
    normalised: bool = False,
) -> dict[str, pl.DataFrame]:
    """Greedy decoding served by one vLLM engine for every variant: each adapter is a
    LoRARequest of that engine (max_loras covers them all; max_lora_rank holds the largest,
    a fused adapter's r_general + r_domain). GPU machines only."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError:
        raise RuntimeError(
            "evaluate.backend: vllm is not installed here. Install it on a GPU machine "
            "(pip install vllm) or use backend generate or rank."
        ) from None
    requests = lora_requests(adapters)
    llm = LLM(model=base, seed=0, **vllm_engine_args(requests))
    prompts = [[m for m in msgs if m["role"] != "assistant"] for msgs in rows["messages"]]
    greedy = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    out = {}
    for variant, request in requests.items():
        lora = LoRARequest(*request) if request else None
        texts = [o.outputs[0].text for o in llm.chat(prompts, greedy, lora_request=lora)]
        out[variant] = _parsed_predictions(rows, texts, titles, normalised)
    return out


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(adapter: str) -> int:
    """The smallest max_lora_rank vLLM accepts that holds the adapter's rank (a fused
    adapter has rank r_general + r_domain)."""
    r = json.loads((Path(adapter) / "adapter_config.json").read_text())["r"]
    for allowed in VLLM_LORA_RANKS:
        if allowed >= r:
            return allowed
    raise ValueError(f"{adapter}: LoRA rank {r} exceeds vLLM's largest ({VLLM_LORA_RANKS[-1]})")


def _parsed_predictions(
    rows, texts: list[str], titles: dict[str, str], normalised: bool
) -> pl.DataFrame:
    """Generated answers matched to each row's candidate titles."""
    from molorec.predict import parse_answer

    parsed = [
        parse_answer(t, [titles[c] for c in cands], cands, normalised)
        for t, cands in zip(texts, rows["candidates"].to_list(), strict=True)
    ]
    return _predictions(
        rows,
        [p.ranking for p in parsed],
        texts,
        [p.n_invalid for p in parsed],
        [p.n_duplicate for p in parsed],
    )


def _predictions(rows, rankings, outputs, invalid, duplicate) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": rows["user"],
            "target": rows["target"],
            "ranking": rankings,
            "output": outputs,
            "n_invalid": invalid,
            "n_duplicate": duplicate,
        },
        schema=PREDICTION_SCHEMA,
    )


def metrics_of(predictions: pl.DataFrame, seed: int, n_boot: int = 1000) -> dict:
    """metrics.json of a predictions table. valid_ratio: the share of generated titles that
    are candidates (1 for ranking backends and baselines)."""
    ranks = [target_rank(r, t) for r, t in predictions.select("ranking", "target").iter_rows()]
    valid = int(predictions["ranking"].list.len().sum() + predictions["n_duplicate"].sum())
    invalid = int(predictions["n_invalid"].sum())
    ratio = valid / (valid + invalid) if valid + invalid else 1.0
    return summarise(ranks, ratio, seed=seed, n_boot=n_boot)


def write_evaluation(
    predictions: pl.DataFrame, out_dir: str | Path, seed: int, n_boot: int = 1000
) -> dict:
    out = Path(out_dir)
    write_parquet(predictions, out / "predictions.parquet")
    metrics = metrics_of(predictions, seed, n_boot)
    write_json(metrics, out / "metrics.json")
    return metrics


SELECTION_SCORE = ("HR@1", "HR@3", "NDCG@3")


def select_lr(val_metrics: dict[str, dict], test_metrics: dict[str, dict]) -> dict:
    """The learning rate chosen on the selection set (held-out validation examples) by
    HR@1 + HR@3 + NDCG@3, never on test labels; the original's test-selected choice is
    reported beside it, labelled optimistic."""

    def score(m: dict) -> float:
        return sum(m[k] for k in SELECTION_SCORE)

    lrs = sorted(val_metrics, key=float)
    if all(val_metrics[lr]["n"] == 0 for lr in lrs):
        # No selection example in this scenario (a small domain's few cold targets): nothing
        # to choose on, so the grid's smallest lr, and selection.json says so.
        chosen, criterion = lrs[0], "no selection examples: the grid's smallest lr"
    else:
        chosen = max(lrs, key=lambda lr: score(val_metrics[lr]))
        criterion = "+".join(SELECTION_SCORE) + " on the selection set (held-out validation)"
    optimistic = max(sorted(test_metrics), key=lambda lr: score(test_metrics[lr]))
    return {
        "criterion": criterion,
        "selection_examples": val_metrics[chosen]["n"],
        "selected_lr": chosen,
        "optimistic_lr": optimistic,
        "selected_test": {k: test_metrics[chosen][k] for k in SELECTION_SCORE},
        "optimistic_test": {k: test_metrics[optimistic][k] for k in SELECTION_SCORE},
        "optimism_gap": score(test_metrics[optimistic]) - score(test_metrics[chosen]),
        "val_scores": {lr: score(m) for lr, m in val_metrics.items()},
    }


def load_metrics(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def trained_items(examples: pl.DataFrame) -> set[str]:
    """Every item in a row the domain adapter trained on (held_out false): its history,
    target, candidates and answer. The novelty baseline picks the candidates outside it."""
    trained = examples.filter(~pl.col("held_out"))
    lists = [trained[c].explode() for c in ("history", "candidates", "answer")]
    return set(pl.concat([*lists, trained["target"]]).drop_nulls().to_list())


def baseline_training_data(
    examples: pl.DataFrame, interactions: pl.DataFrame, items: pl.DataFrame, cold: set[str]
):
    """What every baseline may learn from: the training sequences (training_sequences),
    the catalog's titles (items.parquet) and the items of the trained rows."""
    from molorec.baselines import TrainingData

    return TrainingData(
        sequences=training_sequences(examples, interactions, cold),
        titles=dict(zip(items["item"].to_list(), items["title"].to_list(), strict=True)),
        trained=frozenset(trained_items(examples)),
    )
