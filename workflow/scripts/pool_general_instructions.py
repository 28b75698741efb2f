"""Rule pool_general_instructions: the general domains' sets -> one general set."""

from molorec.data.instructions import pool_instructions
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    rows, held_out = pool_instructions(list(snakemake.input), snakemake.output[0])
    log.info("%d pooled general instructions (%d held out for selection)", rows, held_out)
