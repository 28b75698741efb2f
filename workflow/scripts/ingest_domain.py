"""Rule ingest_domain: raw dumps of one domain -> interactions, items, quality.json."""

from molorec.data import ingest
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    quality = ingest.run(
        snakemake.wildcards.domain,
        snakemake.params.spec,
        snakemake.params.data,
        {
            "interactions": snakemake.output.interactions,
            "items": snakemake.output.catalog,
            "quality": snakemake.output.quality,
        },
        snakemake.threads,
    )
    log.info(
        "%s: %d users, %d items, %d interactions",
        quality["domain"],
        quality["users"],
        quality["items"],
        quality["interactions"],
    )
