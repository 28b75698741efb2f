"""Rule merge_adapters: every point of one merge method's grid (peft's
add_weighted_adapter) from one load of the base model, each in its own folder."""

from pathlib import Path

from molorec.devices import claim_gpus
from molorec.merges import merge_points
from molorec.runlog import log_to, use_threads

with log_to(snakemake.log[0]) as log:
    claim_gpus(snakemake.resources.get("gpu", 0))
    use_threads(snakemake.threads)
    out = Path(snakemake.output[0])
    points = {out / p["label"]: p for p in snakemake.params.points}
    infos = merge_points(
        snakemake.params.base,
        [snakemake.input.general, snakemake.input.domain],
        snakemake.wildcards.method,
        points,
        snakemake.params.seed,
    )
    for folder, info in zip(points, infos, strict=True):
        log.info(
            "%s: weights %s, density %s, rank %d",
            folder.name,
            info["weights"],
            info["density"],
            info["rank"],
        )
