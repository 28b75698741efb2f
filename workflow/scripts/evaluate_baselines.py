"""Rule evaluate_baselines: every configured non-LLM baseline on one scenario's test
examples, in one job (the training data they learn from is built once)."""

from pathlib import Path

import polars as pl

from molorec.data.examples import ExampleSettings
from molorec.evaluate import evaluate_baselines
from molorec.metrics import HEADLINE
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    names = snakemake.params.baselines
    metrics = evaluate_baselines(
        names,
        pl.read_parquet(snakemake.input.examples),
        pl.read_parquet(snakemake.input.interactions),
        pl.read_parquet(snakemake.input.catalog),
        snakemake.wildcards.scenario,
        snakemake.params.settings,
        ExampleSettings(**snakemake.params.example_settings),
        [Path(path).parent for path in snakemake.output.metrics],
    )
    for name, m in metrics.items():
        log.info("%s, %d examples: %s", name, m["n"], {k: m[k] for k in HEADLINE})
