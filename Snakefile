# molorec: raw Amazon / MOOC review dumps to MoLoRec recommenders.
# Stages: data (this file's rules/data.smk) -> adapters -> fusion -> evaluation.
from snakemake.utils import min_version

min_version("9.0")


# config.yaml, unless --configfile names another: Snakemake would merge the two, mixing the
# sample's domains into the other's.
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/fuse.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
