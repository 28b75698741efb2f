"""Rule pool_general_instructions: the general domains' sets -> one general set, and the
(user, item) pairs its rows show (read by the target domains' examples)."""

from molorec.data.instructions import pool_instructions
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    rows, held_out, pairs = pool_instructions(
        list(snakemake.input.instructions),
        snakemake.output.instructions,
        list(snakemake.input.examples),
        snakemake.output.pairs,
    )
    log.info("%d pooled general instructions (%d held out), %d pairs", rows, held_out, pairs)
