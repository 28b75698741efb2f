"""Rule report: metrics table, paired tests, plots, cost per stage, summary.md; every file
it reads is an input of the rule (rules/common.smk: report_inputs)."""

import shutil
from pathlib import Path

from molorec.plan import RESULTS
from molorec.report import build
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    out = Path(snakemake.output.summary).parent
    p = snakemake.params
    build(
        Path(RESULTS),
        out,
        p.domains,
        p.scenarios,
        p.variants,
        p.adapters,
        p.seed,
        p.bootstrap,
        alpha=p.alpha,
        adjust=p.adjust,
        benchmarks=[Path(b) for b in snakemake.input.benchmarks],
        replicates=p.replicates,
        shared=p.shared,
    )
    plots = Path(snakemake.output.plots)
    plots.mkdir(parents=True, exist_ok=True)
    for png in out.glob("*.png"):
        shutil.move(png, plots / png.name)
    log.info("report written to %s", out)
