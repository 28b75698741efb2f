"""In which regime does mixing help? The sample with the real embedded model
(SmolLM2-135M-Instruct), one target domain (Beauty), a 2 x 2 grid of training regimes, each
with 3 replicates (the data and candidates fixed):

    general adapter   default: the quick start's 8 steps of 8 (9% of an epoch of the 717
                      pooled general examples) | strong: every general domain, one full
                      epoch (90 steps; the paper trains 2)
    domain adapter    default: the quick start's 16 steps over Beauty's 626 training rows |
                      scarce: 40 of those rows (train.max_rows: a few dozen, fixed by the
                      data, the same in every replicate), where 2 epochs cap the 16 steps
                      at 10 (config.yaml's train.domain replaces the schema's domain
                      default of 4 epochs, so train.epochs applies)

Every other setting is the quick start's (config.yaml), plus the global mixing weight
chosen on validation (merge_cat over merges.weights): nothing here was chosen by its outcome.

A replicate trains its domain adapter and mixes with the seeds seed + r; the general
adapter of a cell is trained once and shared by its replicates (replicates_share_general),
as the method shares one general adapter across domains. A strong general adapter per
replicate would be 270 training steps alone; shared, the study trains 184 steps in all.
The replicates' spread therefore leaves out the general adapter's training seed.

The cells share their work the way the pipeline does: each cell is a copy of an earlier
cell's folder with one adapter's setting changed, so Snakemake reruns only that adapter and
what depends on it (the data stage runs once, each regime's domain adapters are trained
once, and the default general adapter's 8 steps twice). A cell none of whose sources was
run (--cells) starts from scratch.

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

from molorec.baselines import BASELINES
from molorec.metrics import bootstrap_ci
from molorec.plan import replicates, shared_variants
from molorec.report import replicate_mean
from molorec.sample.prepare import REPO, pipeline_workdir

TARGET = "beauty"
GENERAL = {"default": {}, "strong": {"max_steps": 0, "epochs": 1}}
DOMAIN = {"default": {}, "scarce": {"max_rows": 40}}
# The paper's regime (a strong general adapter) first; each later cell copies the folder of
# the first cell run that differs from it in one adapter (the general adapter preferred: it
# is cheap to train again), and starts from scratch where none of them was run.
CELLS = (
    ("strong", "default", ()),
    ("strong", "scarce", (("strong", "default"),)),
    ("default", "default", (("strong", "default"),)),
    ("default", "scarce", (("strong", "scarce"), ("default", "default"))),
)
# The LLM variants, then every baseline (the trivial ones can explain a figure without skill);
# novelty is the cold list's shortcut, shown there only.
SHOWN = ("general", "domain", "uniform", "molorec", "best merge")
SHOWN += tuple(b for b in BASELINES if b != "novelty")
COLD_SHOWN = ("novelty",)


def cell_config(general: str, domain: str, n_replicates: int) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["domains"] = {
        name: spec
        for name, spec in config["domains"].items()
        if spec["role"] == "general" or name == TARGET
    }
    config["replicates"] = n_replicates
    config["replicates_share_general"] = True
    config["merges"] = {"methods": ["cat"]}  # the global weight, chosen on validation
    config["train"]["general"] |= GENERAL[general]
    config["train"]["domain"] |= DOMAIN[domain]
    return config


def name(cell: tuple[str, str]) -> str:
    return f"general-{cell[0]}_domain-{cell[1]}"


def run_cell(out: Path, cell: tuple[str, str], sources, config: dict) -> float:
    workdir = out / name(cell)
    source = next((out / name(s) for s in sources if (out / name(s)).is_dir()), None)
    if not workdir.exists() and source is not None:
        # The earlier cell's results and Snakemake records: only what the change touches reruns.
        shutil.copytree(source, workdir, symlinks=True)
    cmd = pipeline_workdir(workdir, config, fresh=False)
    t = time.perf_counter()
    with open(workdir / "study.log", "a") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{workdir}: snakemake failed, see {workdir / 'study.log'}")
    return time.perf_counter() - t


def cell_rows(workdir: Path, config: dict) -> list[dict]:
    results = workdir / "results"
    mixing = pl.read_csv(results / "report/mixing.csv")
    rows = []
    for scenario in ("warm", "cold"):
        best = mixing.filter((pl.col("scenario") == scenario) & (pl.col("against") == "best merge"))
        shown = []  # (label, variant)
        for v in SHOWN + (COLD_SHOWN if scenario == "cold" else ()):
            if v != "best merge":
                shown.append((v, v))
            elif best.height:
                label = f"best merge ({best['variant'][0]})"
                if "chosen on validation" in best.columns and not best["chosen on validation"][0]:
                    label += ", a tie on validation: the grid's first point"
                shown.append((label, best["variant"][0]))
        for label, variant in shown:
            values = replicate_mean(
                results, TARGET, scenario, variant, replicates(config), shared_variants(config)
            )
            row = {"scenario": scenario, "variant": label, "n": len(values["HR@1"])}
            for metric in ("HR@1", "NDCG@3"):
                v = values[metric]
                lo, hi = bootstrap_ci(v, np.random.default_rng(config["seed"]))
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
        help="the cells to run, in CELLS order (a cell copies an earlier one where it can)",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table, minutes = [], {}
    for general, domain, sources in CELLS:
        cell = (general, domain)
        if name(cell) not in args.cells:
            continue
        config = cell_config(*cell, args.replicates)
        seconds = run_cell(args.out, cell, sources, config)
        minutes[name(cell)] = round(seconds / 60, 1)
        print(f"{name(cell)}: {seconds / 60:.1f} min", flush=True)
        rows = cell_rows(args.out / name(cell), config)
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
