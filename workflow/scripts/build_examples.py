"""Rule build_examples: interactions -> leave-one-out examples with seeded candidates."""

from molorec.data import examples
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    summary = examples.run(
        snakemake.input.interactions,
        snakemake.input.catalog,
        examples.ExampleSettings(**snakemake.params.settings),
        {"examples": snakemake.output.examples, "summary": snakemake.output.summary},
        snakemake.input.get("pooled_pairs"),
        snakemake.threads,
    )
    log.info("examples per split: %s; skipped: %s", summary["examples"], summary["skipped"])
