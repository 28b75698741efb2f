"""Rules evaluate_llm, evaluate_fused and evaluate_<scenario>_<split>: LLM variants on one
scenario and split, from one load of the base model (one variant per job, or all)."""

import polars as pl
import torch

from molorec.evaluate import predict_variants, scenario_examples, write_evaluation
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    s = snakemake.params.settings
    rows = scenario_examples(
        pl.read_parquet(snakemake.input.examples),
        pl.read_parquet(snakemake.input.instructions),
        snakemake.params.split,
        snakemake.params.scenario,
        s["max_examples"],
    )
    titles = dict(pl.read_parquet(snakemake.input.catalog).select("item", "title").iter_rows())
    jobs = snakemake.params.jobs  # [variant, adapter or None, output folder]
    adapters = {variant: adapter for variant, adapter, _ in jobs}
    folders = {variant: folder for variant, _, folder in jobs}
    log.info("%d variants from one load of %s", len(jobs), snakemake.params.base)
    for variant, predictions in predict_variants(snakemake.params.base, adapters, rows, titles, s):
        metrics = write_evaluation(predictions, folders[variant], s["seed"], s["bootstrap"])
        log.info(
            "%s, %d examples: %s",
            variant,
            metrics["n"],
            {k: metrics[k] for k in ("HR@1", "NDCG@3")},
        )
