"""Rule uniform_adapter: the general and domain adapters mixed with equal weights."""

from molorec.devices import claim_gpus
from molorec.fusion import FusionSettings, run_uniform
from molorec.runlog import log_to, use_threads

with log_to(snakemake.log[0]) as log:
    claim_gpus(snakemake.resources.get("gpu", 0))
    use_threads(snakemake.threads)
    run_uniform(
        snakemake.params.base,
        [snakemake.input.general, snakemake.input.domain],
        snakemake.output[0],
        FusionSettings.from_dict(snakemake.params.settings),
    )
    log.info("uniform mixture written to %s", snakemake.output[0])
