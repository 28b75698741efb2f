"""Recommendation quality of the method on the sample with the real embedded model
(SmolLM2-135M-Instruct), at a larger size than the default run: the paper's 30 candidates,
more test examples and 1.5 times the default run's training steps, one target domain
(Beauty) to stay within an hour on 2 CPU cores.

It prints one table: HR@1, HR@3 and NDCG@3 with 95% bootstrap intervals for every LLM
variant and baseline (content, brand and novelty among them), warm and cold; the lr chosen
on validation and the optimistic (test-selected) gap; the report's paired tests with
Holm-adjusted p-values and the smallest detectable effect; every LLM variant again with the
candidates in reversed order (evaluate.order_check) and the top-1 agreement; the share of
evaluated examples fusion adapted on. Then evaluation-only reruns on the same adapters:
only the examples fusion did not adapt on (evaluate.exclude_adapted), length-normalised
rank scores (evaluate.rank_score: mean), and greedy decoding (evaluate.backend: generate,
the paper's protocol). With --guards, the fusion guards and the label-free prompt choice
as before.

    python studies/which_variant_recommends_best.py [--workdir /tmp/molorec-quality]
                                       [--warm-examples 32] [--train-scale 1.5]
                                       [--reruns adapted mean generate] [--guards]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import time
from pathlib import Path

import polars as pl
import yaml

from molorec.sample.prepare import REPO, pipeline_workdir

GUARDS = [("l2", 0.01), ("floor", 0.05)]
# Fusion reruns beside the paper's method: each guard, and the label-free prompt choice.
FUSION_VARIANTS = [
    *(
        (f"guard {g} {strength}", {"guard": g, "guard_strength": strength})
        for g, strength in GUARDS
    ),
    ("prompts first_n", {"prompt_choice": "first_n"}),
]


def quality_config(warm_examples: int, train_scale: float) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for kind in ("general", "domain"):  # more than the default run trains
        steps = config["train"][kind]["max_steps"]
        config["train"][kind]["max_steps"] = round(steps * train_scale)
    config["domains"] = {
        name: spec
        for name, spec in config["domains"].items()
        if spec["role"] == "general" or name == "beauty"
    }
    config["data"]["n_candidates"] = 30  # the paper's
    config["evaluate"]["max_examples"] = warm_examples  # cold sets are smaller: all of them
    config["evaluate"]["order_check"] = "reversed"  # position bias, on every LLM variant
    return config


# Evaluation-only reruns on the same adapters and fusion runs (the pipeline reruns only the
# evaluation jobs, the selection and the report).
RERUNS = {
    "generate": ("generate (greedy, parsed)", {"backend": "generate", "max_new_tokens": 96}),
    "adapted": ("only examples not adapted on", {"exclude_adapted": True}),
    "mean": ("rank, length-normalised scores", {"rank_score": "mean"}),
}
LLM_VARIANTS = ("base", "general", "domain", "uniform", "molorec")


def summary_section(workdir: Path, title: str) -> str:
    """A section of the report's summary.md, from its heading to the next one."""
    summary = (workdir / "results/report/summary.md").read_text()
    if title not in summary:
        return ""
    start = summary.index(title)
    end = summary.find("\n## ", start + 1)
    return summary[start : end if end > 0 else None]


def table_display(**options) -> pl.Config:
    """Whole tables, without shape or dtypes, as the studies print them."""
    return pl.Config(
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=200,
        fmt_str_lengths=80,
        **options,
    )


def run(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t


def cell(row: dict, metric: str) -> str:
    return f"{row[metric]:.3f} [{row[f'{metric}_lo']:.2f}, {row[f'{metric}_hi']:.2f}]"


def quality_table(workdir: Path) -> pl.DataFrame:
    metrics = pl.read_csv(workdir / "results/report/metrics.csv")
    rows = []
    for row in metrics.iter_rows(named=True):
        out = {"scenario": row["scenario"], "variant": row["variant"], "n": row["n"]}
        out |= {m: cell(row, m) for m in ("HR@1", "HR@3", "NDCG@3")}
        out["selected_lr"] = row.get("selected_lr")
        out["optimism_gap"] = row.get("optimism_gap")
        rows.append(out)
    return pl.DataFrame(rows, infer_schema_length=None)


def fusion_rows(workdir: Path, setting: str) -> list[dict]:
    metrics = pl.read_csv(workdir / "results/report/metrics.csv").filter(
        pl.col("variant") == "molorec"
    )
    runs = pl.read_csv(workdir / "results/report/fusion_runs.csv")
    rows = []
    for row in metrics.iter_rows(named=True):
        fused = runs.filter(pl.col("scenario") == row["scenario"])
        rows.append(
            {
                "fusion": setting,
                "scenario": row["scenario"],
                "selected_lr": row["selected_lr"],
                "HR@1": cell(row, "HR@1"),
                "NDCG@3": cell(row, "NDCG@3"),
                "collapsed_share (per lr)": ", ".join(
                    f"lr {lr}: {share:.2f}"
                    for lr, share in fused.select("lr", "collapsed_share").iter_rows()
                ),
            }
        )
    return rows


def validation_by_step(
    workdir: Path, config: dict, guard: str, strength: float, n_val: int = 24
) -> list[dict]:
    """Warm fusion at the grid's smallest lr, evaluated on validation after every step."""
    import torch

    from molorec.evaluate import predict_llm, scenario_examples
    from molorec.fusion import FusionSettings, adaptation_prompts, load_mixture
    from molorec.metrics import target_rank

    results = workdir / "results"
    fusion = config["fusion"]
    s = FusionSettings.from_dict(
        fusion | {"lr": min(fusion["lr_grid"]["warm"]), "seed": config["seed"]}
    )
    s.guard, s.guard_strength = guard, strength
    mixture, tokenizer = load_mixture(
        str(results / "models" / config["model"]["base"]),
        [str(results / "adapters/general"), str(results / "adapters/beauty")],
        s,
    )
    data = results / "data/beauty"
    instructions = pl.read_parquet(data / "instructions.parquet")
    rows = scenario_examples(
        pl.read_parquet(data / "examples.parquet"), instructions, "val", "warm", n_val
    )
    titles = dict(pl.read_parquet(data / "items.parquet").select("item", "title").iter_rows())
    prompts = adaptation_prompts(instructions, "warm", "test", fusion["n_prompts"]["warm"])

    def hr1() -> float:
        mixture.model.eval()
        with torch.no_grad():
            preds = predict_llm(mixture.model, tokenizer, rows, titles, "rank")
        ranks = [target_rank(r, t) for r, t in preds.select("ranking", "target").iter_rows()]
        return sum(r == 1 for r in ranks) / len(ranks)

    # The first n_val warm validation examples: the pipeline's selection set (which the domain
    # adapter trained on); equal weights at step 0 have entropy ln 2.
    out = [{"step": 0, "weight_entropy": 0.6931, "collapsed_share": 0.0, "val_HR@1": hr1()}]

    def on_step(row: dict) -> None:
        if row["step"] in (1, 3) or row["step"] == len(prompts):
            out.append(
                {
                    "step": row["step"],
                    "weight_entropy": round(row["weight_entropy"], 4),
                    "collapsed_share": round(row["collapsed_share"], 3),
                    "val_HR@1": hr1(),
                }
            )

    from molorec.fusion import adapt

    adapt(mixture, tokenizer, prompts, s, on_step=on_step)
    return [r | {"guard": guard, "lr": s.lr} for r in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/molorec-quality"))
    ap.add_argument("--warm-examples", type=int, default=32)
    ap.add_argument(
        "--train-scale", type=float, default=1.5, help="training steps against the default run"
    )
    ap.add_argument("--keep", action="store_true", help="reuse the workdir's results")
    ap.add_argument(
        "--reruns",
        nargs="*",
        choices=list(RERUNS),
        default=list(RERUNS),
        help="evaluation-only reruns after the main table (none: --reruns with no name)",
    )
    ap.add_argument("--guards", action="store_true", help="also the guard and prompt reruns")
    args = ap.parse_args()
    config = quality_config(args.warm_examples, args.train_scale)
    train_steps = {k: config["train"][k]["max_steps"] for k in ("general", "domain")}

    seconds = run(pipeline_workdir(args.workdir, config, fresh=not args.keep))
    print(
        f"beauty, {config['data']['n_candidates']} candidates, up to "
        f"{args.warm_examples} test examples per scenario, {config['model']['base']}, "
        f"{train_steps['general']} / {train_steps['domain']} training steps of 8 (general / domain "
        f"adapter), {config['model']['precision']}, rank backend; "
        f"pipeline {seconds / 60:.1f} min"
    )
    with table_display():
        print(quality_table(args.workdir))
    for title in (
        "## Did it learn?",
        "## Candidate order check",
        "## Adaptation overlap",
        "## Fusion runs",
    ):
        print(summary_section(args.workdir, title))
    reruns = {}
    for name in args.reruns:
        label, settings = RERUNS[name]
        changed = copy.deepcopy(config)
        changed["evaluate"] |= settings | {"order_check": "none"}
        seconds = run(pipeline_workdir(args.workdir, changed, fresh=False))
        table = quality_table(args.workdir).filter(
            pl.col("variant").is_in([*LLM_VARIANTS, "content", "brand", "novelty", "random"])
        )
        print(f"\n### {label}: evaluation rerun in {seconds / 60:.1f} min")
        with table_display():
            print(table)
        print(summary_section(args.workdir, "## Did it learn?"))
        print(summary_section(args.workdir, "## Generated answers"))
        reruns[name] = table.to_dicts()
    (args.workdir / "which_variant_recommends_best.json").write_text(
        json.dumps({"reruns": reruns}, indent=1)
    )
    if not args.guards:
        pipeline_workdir(
            args.workdir, config, fresh=False
        )  # leave the workdir at the main settings
        return

    guards = fusion_rows(args.workdir, "paper (no guard, target_scenario prompts)")
    for name, settings in FUSION_VARIANTS:
        changed = copy.deepcopy(config)
        changed["fusion"] |= settings
        seconds = run(pipeline_workdir(args.workdir, changed, fresh=False))
        guards += fusion_rows(args.workdir, name)
        print(f"{name}: fusion and its evaluations rerun in {seconds:.0f} s")
    pipeline_workdir(args.workdir, config, fresh=False)  # leave the workdir at the paper's method
    with table_display():
        print(pl.DataFrame(guards))
        steps = validation_by_step(args.workdir, config, "none", 0.0)
        for guard, strength in GUARDS:
            steps += validation_by_step(args.workdir, config, guard, strength)
        print(pl.DataFrame(steps))


if __name__ == "__main__":
    main()
