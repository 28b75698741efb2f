"""Rule build_tiny_model: the embedded tiny Qwen2 model, built offline and seeded."""

from molorec.model import build_tiny_qwen2
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    path = build_tiny_qwen2(snakemake.output[0], **snakemake.params.shape)
    log.info("tiny-qwen2 written to %s", path)
