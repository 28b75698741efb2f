# molorec: raw Amazon / MOOC review dumps to MoLoRec recommenders.
# Stages: data (this file's rules/data.smk) -> adapters -> fusion -> evaluation.
import os
import sys

from snakemake.utils import min_version

min_version("9.0")

# The workflow's own package, src/molorec, for this file and for every job, installed or
# not: a conda env holds only the dependencies, and a workflow used as a module has no
# install of its own. Jobs inherit PYTHONPATH (a SLURM job too: sbatch exports it). This
# sets the variable, it asks nothing of the user, so it is no `envvars:` entry.
SRC = os.path.join(workflow.current_basedir, "src")
PYTHONPATH = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
if os.path.isdir(SRC) and SRC not in PYTHONPATH:
    sys.path.insert(0, SRC)
    os.environ.update(PYTHONPATH=os.pathsep.join([SRC, *PYTHONPATH]))


# config.yaml, unless a --configfile gave the domains: Snakemake would merge the two, mixing
# the sample's domains into the other's. (--config key=value alone still reads config.yaml,
# and its values win over the file's.)
if "domains" not in config:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/fuse.smk"
include: "rules/evaluate.smk"


# Rules that take seconds run in Snakemake's own process on a cluster, not in the queue.
localrules:
    all,
    pool_general_instructions,
    select_molorec,
    select_molorec_replicate,
    select_grid,
    select_grid_replicate,
    report,


rule all:
    default_target: True
    input:
        all_outputs(),
