"""Rule fuse_adapters: learn the mixing weights of one (domain, scenario) for every lr of
its grid from one load of the base model, each lr in its own folder of the output."""

from pathlib import Path

from molorec.devices import claim_gpus
from molorec.fusion import FusionSettings, run_lrs
from molorec.runlog import log_to, use_threads

with log_to(snakemake.log[0]) as log:
    claim_gpus(snakemake.resources.get("gpu", 0))
    use_threads(snakemake.threads)
    out = Path(snakemake.output[0])
    infos = run_lrs(
        snakemake.params.base,
        [snakemake.input.general, snakemake.input.domain],
        snakemake.input.data,
        snakemake.wildcards.scenario,
        {float(lr): out / folder for lr, folder in snakemake.params.lrs},
        FusionSettings.from_dict(snakemake.params.settings),
        progress=True,
    )
    for info in infos:
        log.info(
            "lr %g: adapted on %d %s prompts",
            info["settings"]["lr"],
            info["prompts"],
            info["adapt_on"],
        )
