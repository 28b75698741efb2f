"""Rule evaluate_baseline: a non-LLM baseline on one scenario's test examples."""

import polars as pl

from molorec.data.examples import ExampleSettings, cold_items
from molorec.evaluate import (
    adaptation_facts,
    baseline_training_data,
    evaluated_rows,
    predict_baseline,
    write_evaluation,
)
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    s = snakemake.params.settings
    examples = pl.read_parquet(snakemake.input.examples)
    instructions = examples.select("user", "split", "position").with_columns(messages=pl.lit(None))
    # The LLM variants' rows (evaluate.max_examples, evaluate.exclude_adapted): paired.
    rows = evaluated_rows(examples, instructions, "test", snakemake.wildcards.scenario, s)
    # The cold items as the examples stage drew them: the baselines learn from the items the
    # adapters may train on, no more.
    catalog = pl.read_parquet(snakemake.input.catalog)
    items = catalog["item"].to_list()
    example_settings = ExampleSettings(**snakemake.params.example_settings)
    cold = {i for i, c in zip(items, cold_items(items, example_settings), strict=True) if c}
    data = baseline_training_data(
        examples, pl.read_parquet(snakemake.input.interactions), catalog, cold
    )
    predictions = predict_baseline(snakemake.wildcards.baseline, rows, data, s["seed"])
    out = snakemake.output[0].rsplit("/", 1)[0]
    metrics = write_evaluation(
        predictions, out, s["seed"], s["bootstrap"], adaptation_facts(rows, s)
    )
    log.info("%d examples: %s", metrics["n"], {k: metrics[k] for k in ("HR@1", "NDCG@3")})
