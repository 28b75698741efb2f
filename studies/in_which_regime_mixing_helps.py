"""In which regime does mixing help? The sample with the real embedded model
(SmolLM2-135M-Instruct), one target domain (Beauty), a 2 x 2 grid of training regimes, each
with 3 replicates (training and fusion seeds seed + r; the data and candidates fixed):

    general adapter   default: the quick start's 8 steps of 8 (8% of an epoch of the 821
                      pooled general examples) | strong: every general domain, one full
                      epoch (103 steps; the paper trains 2)
    domain adapter    default: the quick start's 16 steps over its 619 rows | scarce: the
                      same 16 steps over 40 rows (train.max_rows: a few dozen, fixed by the
                      data, the same in every replicate)

Every other setting is the quick start's (config.yaml), plus the global mixing weight
chosen on validation (merge_cat over merges.weights): nothing here was chosen by its outcome.
The cells share their work the way the pipeline does: each cell is a copy of an earlier
cell's folder with one training setting changed, so Snakemake reruns only that adapter and
what depends on it (the data stage runs once).

It prints one table: per cell and scenario, HR@1 and NDCG@3 of general, domain, uniform,
molorec, the best validation-chosen merge and the baselines, each the mean over the 3
replicates of the per-example values with a 95% bootstrap interval over examples; then
each cell's "Does mixing help?" verdicts from its report (paired tests pooled over
replicates, Holm-adjusted over the report's family).

    python studies/in_which_regime_mixing_helps.py [--out /tmp/molorec-regimes]
                                                   [--replicates 3] [--cells ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from which_variant_recommends_best import summary_section, table_display

from molorec.metrics import bootstrap_ci
from molorec.report import replicate_mean
from molorec.sample.prepare import REPO, pipeline_workdir

TARGET = "beauty"
GENERAL = {"default": {}, "strong": {"max_steps": 0, "epochs": 1}}
DOMAIN = {"default": {}, "scarce": {"max_rows": 40}}
# The paper's regime (a strong general adapter) first; each later cell copies the folder of
# the cell that differs from it in one adapter only.
CELLS = (
    ("strong", "default", None),
    ("strong", "scarce", ("strong", "default")),
    ("default", "default", ("strong", "default")),
    ("default", "scarce", ("default", "default")),
)
SHOWN = ("general", "domain", "uniform", "molorec", "best merge", "content", "pop", "random")
COLD_SHOWN = ("novelty",)  # the cold list's shortcut baseline


def cell_config(general: str, domain: str, replicates: int) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["domains"] = {
        name: spec
        for name, spec in config["domains"].items()
        if spec["role"] == "general" or name == TARGET
    }
    config["replicates"] = replicates
    config["merges"] = {"methods": ["cat"]}  # the global weight, chosen on validation
    config["train"]["general"] |= GENERAL[general]
    config["train"]["domain"] |= DOMAIN[domain]
    return config


def name(cell: tuple[str, str]) -> str:
    return f"general-{cell[0]}_domain-{cell[1]}"


def run_cell(out: Path, cell: tuple[str, str], source, config: dict) -> float:
    workdir = out / name(cell)
    if not workdir.exists() and source is not None:
        # The earlier cell's results and Snakemake records: only what the change touches reruns.
        shutil.copytree(out / name(source), workdir, symlinks=True)
    cmd = pipeline_workdir(workdir, config, fresh=False)
    t = time.perf_counter()
    with open(workdir / "study.log", "a") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{workdir}: snakemake failed, see {workdir / 'study.log'}")
    return time.perf_counter() - t


def cell_rows(workdir: Path, replicates: int, seed: int) -> list[dict]:
    results = workdir / "results"
    mixing = pl.read_csv(results / "report/mixing.csv")
    rows = []
    for scenario in ("warm", "cold"):
        best = mixing.filter(
            (pl.col("scenario") == scenario) & (pl.col("against") == "best merge")
        )["variant"]
        shown = {v: v for v in SHOWN} | {"best merge": best[0] if len(best) else None}
        if scenario == "cold":
            shown |= {v: v for v in COLD_SHOWN}
        for label, variant in shown.items():
            if variant is None:
                continue
            values = replicate_mean(results, TARGET, scenario, variant, range(replicates))
            row = {"scenario": scenario, "variant": label, "n": len(values["HR@1"])}
            for metric in ("HR@1", "NDCG@3"):
                v = values[metric]
                lo, hi = bootstrap_ci(v, np.random.default_rng(seed))
                row[metric] = f"{v.mean():.3f} [{lo:.2f}, {hi:.2f}]"
                row[f"{metric} mean"] = float(v.mean())
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/molorec-regimes"))
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument(
        "--cells",
        nargs="*",
        default=[name(c[:2]) for c in CELLS],
        help="the cells to run, in CELLS order (a cell needs the one it copies)",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table, minutes = [], {}
    for general, domain, source in CELLS:
        cell = (general, domain)
        if name(cell) not in args.cells:
            continue
        config = cell_config(*cell, args.replicates)
        seconds = run_cell(args.out, cell, source, config)
        minutes[name(cell)] = round(seconds / 60, 1)
        print(f"{name(cell)}: {seconds / 60:.1f} min", flush=True)
        rows = cell_rows(args.out / name(cell), args.replicates, config["seed"])
        table += [{"general": general, "domain": domain} | r for r in rows]
        (args.out / "table.json").write_text(json.dumps({"minutes": minutes, "rows": table}))
    shown = pl.DataFrame(table).select(
        "general", "domain", "scenario", "variant", "n", "HR@1", "NDCG@3"
    )
    with table_display(tbl_formatting="MARKDOWN"):
        print(shown)
    for general, domain, _ in CELLS:
        if name((general, domain)) in args.cells:
            print(f"\n### general {general}, domain {domain}\n")
            print(summary_section(args.out / name((general, domain)), "## Does mixing help?"))


if __name__ == "__main__":
    main()
