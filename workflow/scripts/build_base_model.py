"""Rule build_base_model: tiny-qwen2, an embedded model from its PyPI wheel, or a .gguf
file, as a standard HF folder."""

from molorec.model import build_base
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    path = build_base(snakemake.params.base, snakemake.output[0], snakemake.params.tiny)
    log.info("%s written to %s", snakemake.params.base, path)
