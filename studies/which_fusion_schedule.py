"""Which fusion step schedule the sample runs, chosen on the selection users' validation
examples (never on test), and what each schedule does to the mixing weights.

On a finished run's folder (its base model, adapters and data), for one target domain and
both scenarios, every candidate schedule adapts the mixture at every lr of the run's grid,
as the pipeline does (same prompts, same settings otherwise). Each mixture is then ranked on
the scenario's selection examples (validation examples of the selection users, which no
adapter trains on). It prints, per schedule and scenario: optimizer steps, the collapsed
share and weight entropy after each step, and HR@1 + HR@3 + NDCG@3 on the selection set at
the lr the selection set picks; the schedule with the best mean over the scenarios wins.

    python studies/which_fusion_schedule.py --workdir /tmp/molorec-quickstart [--domain beauty]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl
import yaml

from molorec.evaluate import metrics_of, predict_variants, scenario_examples, select_lr
from molorec.fusion import FusionSettings, run_lrs

# The sample adapts on 6 warm and 3 cold prompts (about 84 and 42 scored tokens at k = 3):
# the original's 60 x 4 (a step per 240 scored tokens) never steps there, so it is the
# uniform mixture and not a candidate; smaller batches scale its ~6-10 steps per 100
# prompts down to the sample.
CANDIDATES = {
    "prompt (a step per prompt)": {"schedule": "prompt"},
    "pooled 14 x 1": {"schedule": "pooled", "tokens_per_backward": 14, "accumulation": 1},
    "pooled 28 x 1": {"schedule": "pooled", "tokens_per_backward": 28, "accumulation": 1},
}


def settings_of(config: dict, domain: str) -> dict:
    """The pipeline's fusion settings for a domain (as rules/common.smk fusion_settings)."""
    from molorec.config import check_config

    config = check_config(config)
    fusion = config["fusion"] | config["domains"][domain].get("fusion", {})
    return fusion | {"seed": config["seed"], "precision": config["model"]["precision"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--domain", default="beauty")
    ap.add_argument("--out", type=Path, default=None, help="default: WORKDIR/schedules")
    args = ap.parse_args()
    results = args.workdir / "results"
    config = yaml.safe_load((args.workdir / "config.yaml").read_text())
    base_settings = settings_of(config, args.domain)
    out = args.out or args.workdir / "schedules"
    data = results / "data" / args.domain
    examples = pl.read_parquet(data / "examples.parquet")
    instructions = pl.read_parquet(data / "instructions.parquet")
    titles = dict(pl.read_parquet(data / "items.parquet").select("item", "title").iter_rows())
    base = str(results / "models" / config["model"]["base"])
    adapters = [str(results / "adapters/general"), str(results / f"adapters/{args.domain}")]
    eval_settings = {
        "backend": "rank",
        "max_new_tokens": 64,
        "batch_size": 8,
        "normalised_match": False,
        "precision": base_settings["precision"],
    }
    table, trajectories = [], []
    for scenario in ("warm", "cold"):
        rows = scenario_examples(examples, instructions, "val", scenario)
        for name, schedule in CANDIDATES.items():
            n = base_settings["n_prompts"][scenario]
            s = FusionSettings.from_dict(base_settings | schedule | {"n_prompts": n})
            folders = {
                lr: out / name.split(" (")[0].replace(" ", "_") / scenario / f"lr{lr:g}"
                for lr in base_settings["lr_grid"][scenario]
            }
            infos = run_lrs(
                base,
                adapters,
                str(data / "instructions.parquet"),
                scenario,
                folders,
                s,
            )
            preds = dict(
                predict_variants(
                    base,
                    {f"{lr:g}": str(f) for lr, f in folders.items()},
                    rows,
                    titles,
                    eval_settings,
                )
            )
            val = {lr: metrics_of(p, seed=config["seed"], n_boot=100) for lr, p in preds.items()}
            chosen = select_lr(val, val)["selected_lr"]  # validation only, both arguments
            for lr, info in zip(folders, infos, strict=True):
                trajectory = pl.read_csv(folders[lr] / "trajectory.csv")
                trajectories += [
                    {"scenario": scenario, "schedule": name, "lr": lr} | r
                    for r in trajectory.select(
                        "step", "stepped", "optimizer_steps", "collapsed_share", "weight_entropy"
                    ).to_dicts()
                ]
                table.append(
                    {
                        "scenario": scenario,
                        "schedule": name,
                        "lr": lr,
                        "steps": info["optimizer_steps"],
                        "scored": info["scored_tokens"],
                        "collapsed": info["collapsed_share"],
                        "selection n": val[f"{lr:g}"]["n"],
                        "sel HR@1": val[f"{lr:g}"]["HR@1"],
                        "sel score": sum(val[f"{lr:g}"][m] for m in ("HR@1", "HR@3", "NDCG@3")),
                        "chosen": f"{lr:g}" == chosen,
                    }
                )
    frame = pl.DataFrame(table)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=40):
        print(frame)
        print(pl.DataFrame(trajectories))
        best = (
            frame.filter(pl.col("chosen"))
            .group_by("schedule", maintain_order=True)
            .agg(pl.col("sel score").mean().alias("mean selection score"))
            .sort("mean selection score", descending=True, maintain_order=True)
        )
        print(best)
    out.mkdir(parents=True, exist_ok=True)
    (out / "schedules.json").write_text(
        json.dumps({"table": table, "trajectories": trajectories}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
