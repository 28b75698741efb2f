"""Evaluation of one variant on one (domain, scenario, split): predictions and metrics.

LLM variants (base, general, domain, uniform, molorec) rank the candidates with a
prediction backend; the baselines score them from the domain's training sequences. All
variants see exactly the same examples and candidates (evaluated_rows): with
``evaluate.exclude_adapted`` none of the examples the fused mixture adapted on, for every
variant alike. ``evaluate.order_check`` evaluates every LLM variant a second time on the
same examples with the candidates re-ordered in the prompt (position bias).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from molorec.baselines import BASELINES, rank
from molorec.io.parquet import write_json, write_parquet
from molorec.metrics import HEADLINE, summarise, target_rank
from molorec.schema import defaults

PREDICTION_SCHEMA = {
    "user": pl.String,
    "target": pl.String,
    "ranking": pl.List(pl.String),
    "output": pl.String,
    "n_invalid": pl.Int32,
    "n_duplicate": pl.Int32,
}


KEYS = ["user", "split", "position"]

EVALUATE = defaults("evaluate")


def scenario_examples(
    examples: pl.DataFrame,
    instructions: pl.DataFrame,
    split: str,
    scenario: str,
    max_examples: int = EVALUATE["max_examples"],
    adapted: pl.DataFrame | None = None,
    exclude_adapted: bool = EVALUATE["exclude_adapted"],
) -> pl.DataFrame:
    """The examples of one split and scenario (warm: warm targets, cold: cold targets) that
    are evaluated, with their messages; the first ``max_examples`` in file order when > 0.
    For ``val`` that is the selection set (molorec.data.examples): no adapter trained on it.

    ``adapted``: the rows fusion adapted on (fusion.adaptation_rows); a column ``adapted``
    then marks them, and ``exclude_adapted`` drops them before the first ``max_examples``
    are taken (so the count stays max_examples where there are enough)."""
    evaluated = pl.col("selection") if split == "val" else pl.col("held_out")
    rows = examples.filter(
        (pl.col("split") == split) & evaluated & (pl.col("cold") == (scenario == "cold"))
    )
    rows = rows.join(
        instructions.select(*KEYS, "messages"), on=KEYS, how="left", maintain_order="left"
    )
    if adapted is not None:
        marks = adapted.select(KEYS).unique().with_columns(adapted=pl.lit(True))
        rows = rows.join(marks, on=KEYS, how="left", maintain_order="left").with_columns(
            pl.col("adapted").fill_null(False)
        )
        if exclude_adapted:
            rows = rows.filter(~pl.col("adapted"))
    return rows.head(max_examples) if max_examples > 0 else rows


def evaluated_rows(
    examples: pl.DataFrame, instructions: pl.DataFrame, split: str, scenario: str, s: dict
) -> pl.DataFrame:
    """The rows every variant of (split, scenario) is evaluated on, from the evaluate
    settings: the cap (max_examples on test, max_selection_examples on the selection set)
    and the examples the scenario's fused mixture adapted on, marked or excluded. Fusion's
    own choice of prompts (fusion.adaptation_rows) gives those: examples.parquet holds the
    rows of instructions.parquet in the same order."""
    from molorec.fusion import adaptation_rows

    a = s["adaptation"]
    adapted = adaptation_rows(
        examples, scenario, a["adapt_on"], a["n_prompts"][scenario], a["prompt_choice"]
    )
    limit = s["max_selection_examples"] if split == "val" else s["max_examples"]
    return scenario_examples(
        examples, instructions, split, scenario, limit, adapted, s["exclude_adapted"]
    )


def adaptation_facts(rows: pl.DataFrame, s: dict) -> dict:
    """What metrics.json says of the overlap: how many evaluated examples the scenario's
    fused mixture adapted on (0 when they are excluded)."""
    return {"adapted_examples": int(rows["adapted"].sum()), "exclude_adapted": s["exclude_adapted"]}


ORDER_CHECKS = ("none", "reversed", "permuted")


def candidate_order(n: int, order: str, seed: int, key: str) -> list[int]:
    """The positions of n candidates in the re-ordered prompt: reversed, or a permutation
    drawn from the example's own seeded generator (the same on every run and machine)."""
    from molorec.data.examples import stable_hash

    if order == "reversed":
        return list(range(n - 1, -1, -1))
    if order == "permuted":
        rng = np.random.Generator(np.random.PCG64(stable_hash(seed, "order_check", key)))
        return rng.permutation(n).tolist()
    raise ValueError(f"evaluate.order_check {order!r}: expected one of {ORDER_CHECKS[1:]}")


def reorder_candidates(
    rows: pl.DataFrame, items: pl.DataFrame, order: str, seed: int, prompt: dict
) -> pl.DataFrame:
    """The rows with each candidate list re-ordered and the messages rendered again from
    it by the instruction stage's own function, so that the prompts differ in the candidate
    order only. ``prompt``: the domain's instruction settings (prompt, answer_size,
    n_candidates), as the instruction stage got them."""
    from molorec.data.instructions import build_instructions

    reordered = [
        [cands[i] for i in candidate_order(len(cands), order, seed, f"{u}|{sp}|{p}")]
        for u, sp, p, cands in rows.select(*KEYS, "candidates").iter_rows()
    ]
    rows = rows.with_columns(candidates=pl.Series(reordered, dtype=pl.List(pl.String)))
    rendered = build_instructions(rows, items, "", prompt["prompt"], prompt)
    return rows.with_columns(messages=rendered["messages"])


def top1_agreement(given: pl.DataFrame, reordered: pl.DataFrame) -> float:
    """The share of examples whose first-ranked candidate is the same in both orders (an
    invalid or missing first entry agrees with nothing)."""
    if given["user"].to_list() != reordered["user"].to_list():
        raise ValueError("the order check compares the same examples in the same order")
    if given.height == 0:
        return math.nan
    same = [
        bool(a) and bool(b) and a[0] is not None and a[0] == b[0]
        for a, b in zip(given["ranking"].to_list(), reordered["ranking"].to_list(), strict=True)
    ]
    return sum(same) / len(same)


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


def evaluate_baselines(
    names: list[str],
    examples: pl.DataFrame,
    interactions: pl.DataFrame,
    catalog: pl.DataFrame,
    scenario: str,
    s: dict,
    example_settings,
    out_dirs: list[str | Path],
) -> dict[str, dict]:
    """Every baseline in ``names`` on the scenario's test rows (the LLM variants' rows, so
    the comparison is paired), each written to its folder of ``out_dirs``; returns their
    metrics. They learn from what the adapters may train on (baseline_training_data), with
    the cold items as the examples stage drew them (molorec.data.examples.cold_items)."""
    from molorec.data.examples import cold_items

    # evaluated_rows reads the rows' keys only: the baselines never see a prompt.
    instructions = examples.select(*KEYS).with_columns(messages=pl.lit(None))
    rows = evaluated_rows(examples, instructions, "test", scenario, s)
    items = catalog["item"].to_list()
    cold = {i for i, c in zip(items, cold_items(items, example_settings), strict=True) if c}
    data = baseline_training_data(examples, interactions, catalog, cold)
    facts = adaptation_facts(rows, s)
    return {
        name: write_evaluation(
            predict_baseline(name, rows, data, s["seed"]), out, s["seed"], s["bootstrap"], facts
        )
        for name, out in zip(names, out_dirs, strict=True)
    }


def predict_llm(
    model,
    tokenizer,
    rows: pl.DataFrame,
    titles: dict[str, str],
    backend: str,
    max_new_tokens: int = EVALUATE["max_new_tokens"],
    batch_size: int = EVALUATE["batch_size"],
    normalised: bool = EVALUATE["normalised_match"],
    rank_score: str = EVALUATE["rank_score"],
) -> pl.DataFrame:
    """Rank the candidates of every row with the model (an adapter already applied).
    ``rank_score``: how the rank backend scores a title (predict.rank_candidates)."""
    import torch

    from molorec.predict import candidate_ids, generate_texts, prompt_ids, rank_batch

    candidates = rows["candidates"].to_list()
    if backend == "generate":
        prompts = [[m for m in msgs if m["role"] != "assistant"] for msgs in rows["messages"]]
        texts = generate_texts(model, tokenizer, prompts, max_new_tokens, batch_size)
        return _parsed_predictions(rows, texts, titles, normalised)
    if backend == "rank":
        prompts = [prompt_ids(tokenizer, msgs) for msgs in rows["messages"]]
        tokens = [candidate_ids(tokenizer, [titles[c] for c in cands]) for cands in candidates]
        # Batches of similar lengths (little padding); a fixed order, so fixed batches.
        by_length = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        rankings = [None] * len(prompts)
        for lo in range(0, len(by_length), batch_size):
            batch = by_length[lo : lo + batch_size]
            scores = rank_batch(
                model, [prompts[i] for i in batch], [tokens[i] for i in batch], rank_score
            )
            for i, example_scores in zip(batch, scores, strict=True):
                order = torch.argsort(example_scores, descending=True, stable=True).tolist()
                rankings[i] = [candidates[i][j] for j in order]
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
    yields (variant, predictions) in the order given (predict_variant_sets, one row set)."""
    for variant, predictions in predict_variant_sets(base, adapters, {"rows": rows}, titles, s):
        yield variant, predictions["rows"]


def predict_variant_sets(
    base: str,
    adapters: dict[str, str | None],
    row_sets: dict[str, pl.DataFrame],
    titles: dict,
    s: dict,
):
    """Every LLM variant from one load of the base model, each on every row set (name ->
    rows: the examples, and the same examples re-ordered for the order check): yields
    (variant, {name: predictions}) in the order given. An adapter is merged into the base
    weights for its variant, then the weights it changed are read again from the base
    model's safetensors files (not unmerged, which rounds; memory-mapped, so no second copy
    of the model is held in host memory): each variant starts from the very weights a job
    of its own would load, so its predictions are byte-identical to that job's. Each row set is
    predicted on its own (generation batches never mix them), so the examples' predictions
    do not depend on whether the order check runs."""
    if s["backend"] == "vllm":
        yield from vllm_variant_sets(
            base, adapters, row_sets, titles, s["max_new_tokens"], s["normalised_match"]
        ).items()
        return
    import torch
    from peft import PeftModel

    from molorec.model import load_base, model_dtype

    cuda = torch.cuda.is_available()
    model, tokenizer = load_base(base, dtype=model_dtype(s.get("precision", "auto"), cuda))
    model.to("cuda" if cuda else "cpu").eval()
    restore = BaseWeights(base, model)
    # Settings from the schema carry rank_score; a hand-made dict (benchmarks) may leave it
    # to rank_candidates' own.
    options = {"rank_score": s["rank_score"]} if "rank_score" in s else {}
    for variant, adapter in adapters.items():
        merged = model
        if adapter:
            # Merged once: every prediction then runs at the base model's speed.
            peft_model = PeftModel.from_pretrained(model, adapter_weights(adapter))
            touched = merged_weights(peft_model)
            merged = peft_model.merge_and_unload()
        predictions = {
            name: predict_llm(
                merged,
                tokenizer,
                rows,
                titles,
                s["backend"],
                s["max_new_tokens"],
                s["batch_size"],
                s["normalised_match"],
                **options,
            )
            for name, rows in row_sets.items()
        }
        yield variant, predictions
        if adapter:
            restore(touched)
            if hasattr(model, "peft_config"):  # left by peft's injection: a clean model
                del model.peft_config


def merged_weights(peft_model) -> list[str]:
    """The base model's parameter names that merging ``peft_model``'s adapter changes: the
    weight of every layer peft wrapped."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return sorted(
        f"{name.removeprefix(prefix)}.weight"
        for name, module in peft_model.named_modules()
        if isinstance(module, LoraLayer)
    )


class BaseWeights:
    """Puts named weights of a loaded base model back as its files hold them, in the dtype
    and on the device it was loaded with: read from the safetensors files memory-mapped,
    one tensor at a time, so no copy of the model is held in host memory. A model folder
    without safetensors files (pytorch_model.bin only) falls back to a host copy of its
    whole state, taken here."""

    def __init__(self, base: str, model):
        self.model = model
        self.files = safetensors_files(base)
        self.saved = None
        if self.files is None:
            self.saved = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def __call__(self, names: list[str]) -> None:
        import torch
        from safetensors import safe_open

        if self.saved is not None:
            self.model.load_state_dict(self.saved)
            return
        missing = [n for n in names if not any(n in keys for keys in self.files.values())]
        if missing:
            raise ValueError(f"weights {missing[:3]} are not in the base model's files")
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for path, keys in self.files.items():
                wanted = [n for n in names if n in keys]
                if not wanted:
                    continue
                with safe_open(path, framework="pt") as f:
                    for name in wanted:
                        target = params[name]
                        target.copy_(f.get_tensor(name).to(target.dtype))


def safetensors_files(base: str) -> dict[str, set[str]] | None:
    """{file: its tensor names} of a model folder's safetensors weights (one file, or the
    shards its index names); None where there are none."""
    folder = Path(base)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(base, local_files_only=True))
        except Exception:  # not cached: the host-copy fallback
            return None
    index = folder / "model.safetensors.index.json"
    if index.exists():
        files: dict[str, set[str]] = {}
        for name, shard in json.loads(index.read_text())["weight_map"].items():
            files.setdefault(str(folder / shard), set()).add(name)
        return files
    single = folder / "model.safetensors"
    if not single.exists():
        return None
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return {str(single): set(f.keys())}


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
    sets = vllm_variant_sets(base, adapters, {"rows": rows}, titles, max_new_tokens, normalised)
    return {variant: predictions["rows"] for variant, predictions in sets.items()}


def vllm_variant_sets(
    base: str,
    adapters: dict[str, str | None],
    row_sets: dict[str, pl.DataFrame],
    titles: dict[str, str],
    max_new_tokens: int,
    normalised: bool = False,
) -> dict[str, dict[str, pl.DataFrame]]:
    """predict_vllm_variants on every row set (name -> rows) from one engine:
    {variant: {name: predictions}}."""
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
    greedy = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    out = {}
    for variant, request in requests.items():
        lora = LoRARequest(*request) if request else None
        out[variant] = {}
        for name, rows in row_sets.items():
            prompts = [[m for m in msgs if m["role"] != "assistant"] for msgs in rows["messages"]]
            texts = [o.outputs[0].text for o in llm.chat(prompts, greedy, lora_request=lora)]
            out[variant][name] = _parsed_predictions(rows, texts, titles, normalised)
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
    """metrics.json of a predictions table. The target's rank is its slot in the ranking:
    for a generated answer its raw position, invalid and repeated entries keeping theirs.
    valid_ratio: the share of generated entries that are candidates (1 for ranking backends
    and baselines). For generated answers, the share of answers with at least one invalid
    entry, with at least one duplicate entry, and empty (None where nothing was generated:
    the rank backend and the baselines rank every candidate once)."""
    ranks = [target_rank(r, t) for r, t in predictions.select("ranking", "target").iter_rows()]
    entries = int(predictions["ranking"].list.len().sum())
    invalid = int(predictions["n_invalid"].sum())
    ratio = (entries - invalid) / entries if entries else 1.0
    metrics = summarise(ranks, ratio, seed=seed, n_boot=n_boot)
    answers = predictions.filter(pl.col("output").is_not_null())
    shares = {
        "invalid_answer_share": pl.col("n_invalid") > 0,
        "duplicate_answer_share": pl.col("n_duplicate") > 0,
        "empty_answer_share": pl.col("ranking").list.len() == 0,
    }
    for name, answer_has in shares.items():
        metrics[name] = answers.select(answer_has.mean()).item() if answers.height else None
    return metrics


def write_evaluation(
    predictions: pl.DataFrame,
    out_dir: str | Path,
    seed: int,
    n_boot: int = 1000,
    facts: dict | None = None,
) -> dict:
    """predictions.parquet and metrics.json; ``facts`` (what the evaluation was run on, e.g.
    adaptation_facts) are added to metrics.json as they are."""
    out = Path(out_dir)
    write_parquet(predictions, out / "predictions.parquet")
    metrics = metrics_of(predictions, seed, n_boot) | (facts or {})
    write_json(metrics, out / "metrics.json")
    return metrics


ORDER_CHECK_DIR = "order_check"


def write_order_check(
    given: pl.DataFrame,
    reordered: pl.DataFrame,
    out_dir: str | Path,
    order: str,
    seed: int,
    n_boot: int = 1000,
    facts: dict | None = None,
) -> dict:
    """The variant on its examples with the candidates re-ordered: predictions.parquet and
    metrics.json under <variant folder>/order_check/, with the order and how often the
    first-ranked candidate agrees with the given order's."""
    extra = {"order": order, "top1_agreement": top1_agreement(given, reordered)}
    return write_evaluation(
        reordered, Path(out_dir) / ORDER_CHECK_DIR, seed, n_boot, (facts or {}) | extra
    )


def tied_with(scores: dict[str, float], chosen: str) -> list[str]:
    """The settings other than ``chosen`` whose selection score equals its score."""
    return [k for k, v in scores.items() if k != chosen and math.isclose(v, scores[chosen])]


def decided(selection: dict) -> bool:
    """Whether a selection (selection.json) rests on the selection set telling the chosen
    setting apart from every other: false for a grid of one setting, no selection example
    or a tie at the top."""
    scores = selection["val_scores"]
    # molorec's lrs: the scores are keyed by lr, "selected" is the lr's folder
    chosen = selection["selected"] if selection["selected"] in scores else selection["selected_lr"]
    return len(scores) > 1 and selection["selection_examples"] > 0 and not tied_with(scores, chosen)


def select_setting(
    val_metrics: dict[str, dict],
    test_metrics: dict[str, dict] | None,
    first: str = "the grid's first setting",
) -> dict:
    """The setting (a key of both dicts, tried in their order) chosen on the selection set
    (held-out validation examples) by HR@1 + HR@3 + NDCG@3, never on test labels; ties go
    to the first (``first`` names it). ``decided`` says whether the selection set told the
    chosen setting apart from every other one: not with one setting, no selection example
    or a tie at the top (a small cold selection set often scores every point 0), and the
    criterion then says which. Where every setting was evaluated on test too
    (``test_metrics``), the setting test labels would choose is reported beside it,
    labelled optimistic."""

    def score(m: dict) -> float:
        return sum(m[k] for k in HEADLINE)

    settings = list(val_metrics)
    scores = {k: score(m) for k, m in val_metrics.items()}
    chosen = max(settings, key=scores.get)
    tied = tied_with(scores, chosen)
    n = val_metrics[chosen]["n"]
    if len(settings) == 1:
        criterion = "a grid of one setting: nothing to choose"
    elif all(val_metrics[k]["n"] == 0 for k in settings):
        # No selection example in this scenario (a small domain's few cold targets): nothing
        # to choose on, so the grid's first setting, and selection.json says so.
        chosen = settings[0]
        criterion = f"no selection examples: {first}"
    elif tied:
        criterion = (
            f"{len(tied) + 1} of the grid's {len(settings)} settings tie on the selection "
            f"set (n = {n}): {first} among them, not a choice"
        )
    else:
        criterion = "+".join(HEADLINE) + " on the selection set (held-out validation)"
    selection = {
        "criterion": criterion,
        "selection_examples": n,
        "selected": chosen,
        "selection_score": scores[chosen],
        "val_scores": scores,
    }
    selection["decided"] = decided(selection)
    if test_metrics is None:
        return selection
    optimistic = max(settings, key=lambda k: score(test_metrics[k]))
    return selection | {
        "optimistic": optimistic,
        "selected_test": {k: test_metrics[chosen][k] for k in HEADLINE},
        "optimistic_test": {k: test_metrics[optimistic][k] for k in HEADLINE},
        "optimism_gap": score(test_metrics[optimistic]) - score(test_metrics[chosen]),
    }


def select_lr(val_metrics: dict[str, dict], test_metrics: dict[str, dict]) -> dict:
    """select_setting over learning rates (keys: lr labels), tried from the smallest."""
    lrs = sorted(val_metrics, key=float)
    chosen = select_setting(
        {lr: val_metrics[lr] for lr in lrs}, test_metrics, first="the grid's smallest lr"
    )
    chosen["selected_lr"], chosen["optimistic_lr"] = (
        chosen.pop("selected"),
        chosen.pop("optimistic"),
    )
    return chosen


def select_point(val_metrics: dict[str, dict], test_metrics: dict[str, dict] | None) -> dict:
    """select_setting over the folders of a grid (lr<lr> of a fusion grid, a merge's
    points), in the grid's order; for molorec's fused lrs (evaluated on test too) also
    selected_lr and optimistic_lr, as select_lr gives them."""
    if test_metrics is not None and all(p.startswith("lr") for p in val_metrics):
        label = {p[2:]: p for p in val_metrics}
        chosen = select_lr(
            {lr: val_metrics[p] for lr, p in label.items()},
            {lr: test_metrics[p] for lr, p in label.items()},
        )
        return chosen | {
            "selected": label[chosen["selected_lr"]],
            "optimistic": label[chosen["optimistic_lr"]],
        }
    return select_setting(val_metrics, test_metrics)


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
