"""Rule fuse_adapters: learn the mixing weights of one (domain, scenario, lr) setting."""

import torch

from molorec.fusion import FusionSettings, run
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    settings = FusionSettings.from_dict(
        {**snakemake.params.settings, "lr": float(snakemake.wildcards.lr)}
    )
    summary = run(
        snakemake.params.base,
        [snakemake.input.general, snakemake.input.domain],
        snakemake.input.data,
        snakemake.wildcards.scenario,
        snakemake.params.adapt_on,
        snakemake.params.n_prompts,
        settings,
        snakemake.output[0],
        progress=True,
        prompt_choice=snakemake.params.prompt_choice,
    )
    log.info("adapted on %d %s prompts", summary["prompts"], summary["adapt_on"])
