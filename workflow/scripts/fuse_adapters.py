"""Rules fuse_adapters and fuse_<scenario>: learn the mixing weights of one (domain,
scenario) for one lr, or for every lr of the grid from one load of the base model."""

import torch

from molorec.fusion import FusionSettings, run_lrs
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    out_dirs = {float(lr): folder for lr, folder in snakemake.params.out_dirs}
    infos = run_lrs(
        snakemake.params.base,
        [snakemake.input.general, snakemake.input.domain],
        snakemake.input.data,
        snakemake.params.scenario,
        snakemake.params.adapt_on,
        snakemake.params.n_prompts,
        out_dirs,
        FusionSettings.from_dict(snakemake.params.settings),
        progress=True,
        prompt_choice=snakemake.params.prompt_choice,
    )
    for info in infos:
        log.info(
            "lr %g: adapted on %d %s prompts",
            info["settings"]["lr"],
            info["prompts"],
            info["adapt_on"],
        )
