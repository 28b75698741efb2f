"""Rule build_instructions: examples -> chat messages in the prompt template."""

from molorec.data.instructions import write_instructions
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    params = snakemake.params[0]
    rows = write_instructions(
        snakemake.input.examples,
        snakemake.input.catalog,
        snakemake.output[0],
        snakemake.wildcards.domain,
        params["prompt"],
        params,
    )
    log.info("%d instructions", rows)
