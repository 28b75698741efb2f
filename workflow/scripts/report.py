"""Rule report: metrics table, paired tests, plots, cost per stage, summary.md."""

import shutil
from pathlib import Path

from molorec.report import build
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    out = Path(snakemake.output.summary).parent
    p = snakemake.params
    build(
        Path("results"),
        out,
        p.domains,
        p.scenarios,
        p.variants,
        p.adapters,
        p.seed,
        p.bootstrap,
        alpha=p.alpha,
        adjust=p.adjust,
    )
    plots = Path(snakemake.output.plots)
    plots.mkdir(parents=True, exist_ok=True)
    for png in out.glob("*.png"):
        shutil.move(png, plots / png.name)
    log.info("report written to %s", out)
