"""Rule evaluate_baseline: a non-LLM baseline on one scenario's test examples."""

import polars as pl

from molorec.evaluate import (
    cold_items,
    predict_baseline,
    scenario_examples,
    training_sequences,
    write_evaluation,
)
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    s = snakemake.params.settings
    examples = pl.read_parquet(snakemake.input.examples)
    instructions = examples.select("user", "split", "position").with_columns(messages=pl.lit(None))
    rows = scenario_examples(
        examples, instructions, "test", snakemake.wildcards.scenario, s["max_examples"]
    )
    sequences = training_sequences(
        examples, pl.read_parquet(snakemake.input.interactions), cold_items(examples)
    )
    predictions = predict_baseline(snakemake.wildcards.baseline, rows, sequences, s["seed"])
    metrics = write_evaluation(predictions, snakemake.output[0].rsplit("/", 1)[0], s["seed"])
    log.info("%d examples: %s", metrics["n"], {k: metrics[k] for k in ("HR@1", "NDCG@3")})
