"""Rules evaluate_llm and evaluate_fused: one LLM variant on one scenario and split."""

from pathlib import Path

import polars as pl
import torch

from molorec.evaluate import predict_llm, predict_vllm, scenario_examples, write_evaluation
from molorec.model import load_base
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    s = snakemake.params.settings
    adapter = snakemake.input.get("adapter")
    if adapter and (Path(adapter) / "adapter").is_dir():  # fusion folders hold adapter/
        adapter = str(Path(adapter) / "adapter")
    rows = scenario_examples(
        pl.read_parquet(snakemake.input.examples),
        pl.read_parquet(snakemake.input.instructions),
        snakemake.params.split,
        snakemake.wildcards.scenario,
        s["max_examples"],
    )
    titles = dict(pl.read_parquet(snakemake.input.catalog).select("item", "title").iter_rows())
    if s["backend"] == "vllm":
        predictions = predict_vllm(
            snakemake.params.base,
            adapter,
            rows,
            titles,
            s["max_new_tokens"],
            s["normalised_match"],
        )
    else:
        cuda = torch.cuda.is_available()
        model, tokenizer = load_base(
            snakemake.params.base, dtype=torch.bfloat16 if cuda else torch.float32
        )
        if adapter:
            from peft import PeftModel

            # Merged once: every prediction then runs at the base model's speed.
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        model.to("cuda" if cuda else "cpu").eval()
        predictions = predict_llm(
            model,
            tokenizer,
            rows,
            titles,
            s["backend"],
            s["max_new_tokens"],
            s["batch_size"],
            s["normalised_match"],
        )
    out = Path(snakemake.output.metrics).parent
    metrics = write_evaluation(predictions, out, s["seed"], s["bootstrap"])
    log.info("%d examples: %s", metrics["n"], {k: metrics[k] for k in ("HR@1", "NDCG@3")})
