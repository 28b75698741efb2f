"""Rules evaluate_llm, evaluate_grid and evaluate_selected: every LLM variant of one
scenario and split from one load of the base model, each in its own folder; with
evaluate.order_check, each variant a second time with the candidates re-ordered."""

import json
from pathlib import Path

import polars as pl

from molorec.devices import claim_gpus
from molorec.evaluate import (
    adaptation_facts,
    evaluated_rows,
    predict_variant_sets,
    reorder_candidates,
    write_evaluation,
    write_order_check,
)
from molorec.metrics import HEADLINE
from molorec.runlog import log_to, use_threads

with log_to(snakemake.log[0]) as log:
    claim_gpus(snakemake.resources.get("gpu", 0))
    use_threads(snakemake.threads)
    s = snakemake.params.settings
    rows = evaluated_rows(
        pl.read_parquet(snakemake.input.examples),
        pl.read_parquet(snakemake.input.instructions),
        snakemake.params.split,
        snakemake.wildcards.scenario,
        s,
    )
    catalog = pl.read_parquet(snakemake.input.catalog)
    titles = dict(catalog.select("item", "title").iter_rows())
    facts = adaptation_facts(rows, s)
    row_sets = {"given": rows}
    if s["order_check"] != "none":
        row_sets["reordered"] = reorder_candidates(
            rows, catalog, s["order_check"], s["seed"], snakemake.params.prompt
        )
    jobs = snakemake.params.jobs  # [variant, adapter or None, output folder]
    if "selection" in snakemake.input.keys():  # rule evaluate_selected: the chosen point
        chosen = json.loads(Path(snakemake.input.selection).read_text())["selected"]
        jobs = [[v, a.format(selected=chosen), out] for v, a, out in jobs]
    adapters = {variant: adapter for variant, adapter, _ in jobs}
    folders = {variant: folder for variant, _, folder in jobs}
    log.info(
        "%d variants from one load of %s; %d examples, %d of them adapted on by fusion%s",
        len(jobs),
        snakemake.params.base,
        rows.height,
        facts["adapted_examples"],
        f"; order check: {s['order_check']}" if len(row_sets) > 1 else "",
    )
    for variant, predictions in predict_variant_sets(
        snakemake.params.base, adapters, row_sets, titles, s
    ):
        given = predictions["given"]
        metrics = write_evaluation(given, folders[variant], s["seed"], s["bootstrap"], facts)
        log.info(
            "%s, %d examples: %s",
            variant,
            metrics["n"],
            {k: metrics[k] for k in HEADLINE},
        )
        if "reordered" in predictions:
            check = write_order_check(
                given,
                predictions["reordered"],
                folders[variant],
                s["order_check"],
                s["seed"],
                s["bootstrap"],
                facts,
            )
            log.info(
                "%s, candidates %s: HR@1 %.4f, top-1 agreement %.3f",
                variant,
                s["order_check"],
                check["HR@1"],
                check["top1_agreement"],
            )
