import json
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from molorec.config import ConfigError, canonical, check_config
from molorec.io.formats import FORMATS
from molorec.model import TINY, built_here, is_gguf, resolve_base
from molorec.plan import (
    SCENARIOS,
    SELECTED,
    SPLITS,
    adapter_dir,
    control_dir,
    controls,
    eval_dir,
    fusion_dir,
    grid_eval_dir,
    grid_points,
    grid_source,
    grid_variants,
    merge_dir,
    merge_grid,
    merge_methods,
    general_dir,
    replicate_root,
    replicate_seed,
    replicates,
    lr_variants,
    report_variants,
    run_variants,
    shared_variants,
    trains_general,
    uniform_dir,
    variant_adapter,
    variant_dir,
    domains_with_role,
)
from molorec.schema import SCHEMA_PATH, load_schema
from molorec.settings import (
    cold_item_settings,
    eval_settings,
    example_settings,
    fusion_settings,
    ingest_settings,
    ingest_spec,
    instruction_settings,
    train_settings,
)

# Readable errors (domain, key, path) before Snakemake's own schema check.
CONFIG_SCHEMA = load_schema()
try:
    check_config(config, schema=CONFIG_SCHEMA)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, schema=str(SCHEMA_PATH))
# One spelling per setting (sorted keys, unordered lists sorted): params are compared as
# text, so a config re-serialised or reordered by a program must plan nothing new.
_canonical = canonical(config, CONFIG_SCHEMA)
config.clear()
config.update(_canonical)

DOMAINS = sorted(config["domains"])
GENERAL_DOMAINS = domains_with_role(config, "general")
TARGET_DOMAINS = domains_with_role(config, "target")


wildcard_constraints:
    replicate="[1-9][0-9]*",
    domain="|".join(DOMAINS),
    scenario="|".join(SCENARIOS),
    split="|".join(SPLITS),


def domain_spec(wildcards):
    return config["domains"][wildcards.domain]


def raw_inputs(wildcards):
    """The raw dump files of one domain, so Snakemake reruns it when they change."""
    spec = domain_spec(wildcards)
    return FORMATS[spec["format"]].files(spec)


# The (user, item) pairs the pooled general set shows (rule pool_general_instructions).
POOLED_PAIRS = "results/data/general/pooled_pairs.parquet"


def examples_inputs(wildcards):
    """A domain's interactions and items; for a target domain of a run that pools general
    data, also the pool's pairs: its held-out examples adapt to the pool (never the pool
    to the targets, so a new target domain leaves the general adapter alone)."""
    data = f"results/data/{wildcards.domain}"
    inputs = {
        "interactions": f"{data}/interactions.parquet",
        "catalog": f"{data}/items.parquet",
    }
    if domain_spec(wildcards)["role"] == "target" and GENERAL_DOMAINS:
        inputs["pooled_pairs"] = POOLED_PAIRS
    return inputs


# The settings each stage reads (molorec.settings), as params of its rules.
def ingest_params(wildcards):
    return ingest_spec(config, wildcards.domain)


def examples_params(wildcards):
    return vars(example_settings(config, wildcards.domain))


def cold_item_params(wildcards):
    return cold_item_settings(config, wildcards.domain)


def instruction_params(wildcards):
    return instruction_settings(config, wildcards.domain)


def input_mb(wildcards, input):
    """Memory for a data job: raw dumps expand a lot once parsed."""
    return max(2000, 1000 + 12 * int(input.size_mb))


BASE_MODEL = resolve_base(config["model"]["base"])


def base_model_input(wildcards):
    """The base model folder a rule builds, or a local model folder; nothing for a hub id."""
    if built_here(config["model"]["base"]):
        return BASE_MODEL
    return BASE_MODEL if os.path.isdir(BASE_MODEL) else []


def gguf_input(wildcards):
    """The .gguf file a base model is converted from, if model.base names one."""
    base = config["model"]["base"]
    return base if is_gguf(base) else []


# The general adapter: trained here from the general domains, or built elsewhere and shared.
SHARED_GENERAL = config.get("general_adapter")
TRAIN_GENERAL = bool(GENERAL_DOMAINS)
HAS_GENERAL = TRAIN_GENERAL or bool(SHARED_GENERAL)

# Replicates (molorec.plan.replicates): replicate 0 is the run under results/; replicate r
# runs the model stages again under results/replicates/<r>/ with the seeds of r (each
# model rule has a replicate copy, made with use rule, its outputs there).
REPLICATES = replicates(config)
REPLICATE_ROOT = replicate_root("{replicate}")


def replicate_of(wildcards):
    return int(wildcards.get("replicate", 0))


def root_of(wildcards):
    return replicate_root(replicate_of(wildcards))


def seed_of(wildcards):
    return replicate_seed(config, replicate_of(wildcards))


def general_of(wildcards):
    """The general adapter a replicate mixes (molorec.plan.general_dir)."""
    return general_dir(config, replicate_of(wildcards))


def domain_adapter_of(wildcards):
    return adapter_dir(wildcards.domain, root_of(wildcards))


def checkpoints_of(name):
    return lambda w: f"{root_of(w)}/checkpoints/{name.format(**w)}"


def stage_resource(stage, name):
    """A job resource of a stage from config resources.<stage>; gpu 0 and 1 otherwise."""
    return config["resources"][stage].get(name, 0 if name == "gpu" else 1)


def stage_resources(stage):
    """The job resources of a stage: config resources.<stage> without threads, gpu 0 if unset.
    A profile's set-resources overrides them per rule (profiles/slurm/)."""
    resources = {"gpu": 0} | config["resources"][stage]
    resources.pop("threads", None)
    return resources


def fused_lrs(wildcards):
    """[lr, folder] of every lr of one fusion job's grid."""
    lrs = config["fusion"]["lr_grid"][wildcards.scenario]
    folders = lr_variants(config, wildcards.scenario)
    return [[lr, folder] for lr, folder in zip(lrs, folders, strict=True)]


def launcher(wildcards, resources):
    """One process per GPU: accelerate launch for several, plain python otherwise; a GPU
    job runs on the cards it claims (molorec.devices), not on whichever is device 0."""
    if resources.gpu == 0:
        return "python"
    claim = f"python -m molorec.devices --gpus {resources.gpu} --"
    if resources.gpu > 1:
        n = resources.gpu
        return f"{claim} accelerate launch --multi_gpu --num_machines 1 --num_processes {n}"
    return f"{claim} python"


# evaluate.order_check: every LLM variant evaluated a second time with the candidates
# re-ordered; its files lie in <variant folder>/order_check/.
ORDER_CHECK = config["evaluate"]["order_check"] != "none"
ORDER_CHECK_FILES = {
    "order_check_predictions": "order_check/predictions.parquet",
    "order_check_metrics": "order_check/metrics.json",
}


def order_check_outputs(folder):
    """The named order-check outputs of a variant folder; none without the order check."""
    return {
        k: f"{folder}/{name}" for k, name in ORDER_CHECK_FILES.items() if ORDER_CHECK
    }


# The selected fused adapter's folder, {domain} and {scenario} left open.
SELECTED_DIR = variant_dir("{domain}", "{scenario}", SELECTED)
REPLICATE_SELECTED_DIR = variant_dir(
    "{domain}", "{scenario}", SELECTED, root=REPLICATE_ROOT
)


def run_adapter(domain, scenario, variant, general, root):
    """The input an LLM variant's adapter comes from: a fused lr is a folder inside its
    fusion job's output, so the job's output is the input."""
    if variant.startswith("lr"):
        return fusion_dir(domain, scenario, root)
    return variant_adapter(domain, scenario, variant, general, root)


def eval_data_inputs(domain):
    """Examples, prompts and titles of the domain and the base model: what every LLM
    evaluation job reads beside its adapters."""
    data = f"results/data/{domain}"
    return {
        "examples": f"{data}/examples.parquet",
        "instructions": f"{data}/instructions.parquet",
        "catalog": f"{data}/items.parquet",
        "base": base_model_input(None),
    }


def eval_inputs(wildcards):
    """eval_data_inputs and the adapters of the variants one evaluation job runs."""
    d, sc, sp, root = (
        wildcards.domain,
        wildcards.scenario,
        wildcards.split,
        root_of(wildcards),
    )
    r, general = replicate_of(wildcards), general_of(wildcards)
    variants = run_variants(config, sc, sp, r)
    adapters = [run_adapter(d, sc, v, general, root) for v in variants]
    return eval_data_inputs(d) | {
        "adapters": list(dict.fromkeys(a for a in adapters if a is not None)),
    }


def eval_jobs(wildcards):
    """[variant, adapter folder or None, output folder] of every variant of one job."""
    d, sc, sp, root = (
        wildcards.domain,
        wildcards.scenario,
        wildcards.split,
        root_of(wildcards),
    )
    general = general_of(wildcards)
    return [
        [v, variant_adapter(d, sc, v, general, root), variant_dir(d, sc, v, sp, root)]
        for v in run_variants(config, sc, sp, replicate_of(wildcards))
    ]


def baseline_outputs(name):
    """One output file of every configured baseline, {domain} and {scenario} left open."""
    return [
        f"{variant_dir('{domain}', '{scenario}', b)}/{name}"
        for b in config["evaluate"]["baselines"]
    ]


def select_inputs(wildcards):
    """The selection set's and test's evaluation folders of the scenario's fused lrs."""
    d, sc, root = wildcards.domain, wildcards.scenario, root_of(wildcards)
    return {split: eval_dir(d, sc, split, root) for split in SPLITS}


# Grid variants (molorec.plan.grid_variants): peft merges and fusion controls, each with
# merge or fusion jobs, evaluation jobs and a selection of its own.
MERGE_METHODS = merge_methods(config)
CONTROLS_ON = controls(config)
GRID_VARIANTS = grid_variants(config)
GRID_SELECTED_DIR = variant_dir("{domain}", "{scenario}", "{grid}")
REPLICATE_GRID_DIR = variant_dir(
    "{domain}", "{scenario}", "{grid}", root=REPLICATE_ROOT
)


def grid_adapter(domain, scenario, grid, point, root):
    """The folder of one point of a grid variant: its adapter lies in it, under adapter/."""
    return f"{grid_source(domain, scenario, grid, root)}/{point}"


def grid_eval_inputs(wildcards):
    """evaluate_llm's inputs, with the grid variant's job output as the adapters."""
    d, sc, root = wildcards.domain, wildcards.scenario, root_of(wildcards)
    return eval_data_inputs(d) | {
        "adapters": [grid_source(d, sc, wildcards.grid, root)]
    }


def grid_eval_jobs(wildcards):
    """[point, adapter folder, output folder] of every point of a grid variant."""
    d, sc, g, sp = wildcards.domain, wildcards.scenario, wildcards.grid, wildcards.split
    root = root_of(wildcards)
    return [
        [p, grid_adapter(d, sc, g, p, root), f"{grid_eval_dir(d, sc, g, sp, root)}/{p}"]
        for p in grid_points(config, g, sc)
    ]


def selected_eval_inputs(wildcards):
    """evaluate_llm's inputs, with the grid variant's adapters and its selection."""
    d, sc, g, root = (
        wildcards.domain,
        wildcards.scenario,
        wildcards.grid,
        root_of(wildcards),
    )
    return grid_eval_inputs(wildcards) | {
        "selection": f"{variant_dir(d, sc, g, root=root)}/selection.json"
    }


def selected_eval_jobs(wildcards):
    """The chosen point's job: {selected} is filled in from the selection (evaluate_llm.py)."""
    d, sc, g, root = (
        wildcards.domain,
        wildcards.scenario,
        wildcards.grid,
        root_of(wildcards),
    )
    return [
        [
            g,
            grid_adapter(d, sc, g, "{selected}", root),
            variant_dir(d, sc, g, root=root),
        ]
    ]


def grid_select_input(wildcards):
    d, sc, g = wildcards.domain, wildcards.scenario, wildcards.grid
    return grid_eval_dir(d, sc, g, "val", root_of(wildcards))


def grid_outputs(d, root):
    """Every merge and control fusion output of a target domain."""
    merges = [merge_dir(d, m, root) for m in MERGE_METHODS]
    return merges + [
        control_dir(d, c, sc, root) for c in CONTROLS_ON for sc in SCENARIOS
    ]


def evaluations():
    """Every evaluation output of every replicate: the LLM jobs' folders, the selections,
    the grid variants; and the baselines (the same in every replicate)."""
    outputs = []
    for d in TARGET_DOMAINS:
        for sc in SCENARIOS:
            for r in REPLICATES:
                root = replicate_root(r)
                outputs += [eval_dir(d, sc, sp, root) for sp in SPLITS]
                outputs.append(
                    f"{variant_dir(d, sc, SELECTED, root=root)}/selection.json"
                )
                for g in GRID_VARIANTS:
                    outputs.append(grid_eval_dir(d, sc, g, "val", root))
                    outputs += [
                        f"{variant_dir(d, sc, g, root=root)}/{name}"
                        for name in (
                            "selection.json",
                            "predictions.parquet",
                            "metrics.json",
                        )
                    ]
            outputs += [
                f"{variant_dir(d, sc, b)}/{name}"
                for b in config["evaluate"]["baselines"]
                for name in ("predictions.parquet", "metrics.json")
            ]
    return outputs


def fusions():
    return [
        path
        for r in REPLICATES
        for d in TARGET_DOMAINS
        for path in [uniform_dir(d, replicate_root(r))]
        + [fusion_dir(d, sc, replicate_root(r)) for sc in SCENARIOS]
        + grid_outputs(d, replicate_root(r))
    ]


def adapters():
    """Every adapter trained here, in every replicate."""
    return [
        adapter_dir(a, replicate_root(r))
        for r in REPLICATES
        for a in (["general"] if trains_general(config, r) else []) + TARGET_DOMAINS
    ]


def model_benchmarks(name, replicate):
    """The benchmark files of a model-stage rule's jobs in one replicate (its _replicate
    copy's beyond the first)."""
    pairs = {"domain": TARGET_DOMAINS, "scenario": SCENARIOS}
    wildcards = {
        "train_general_adapter": {},
        "train_domain_adapter": {"domain": TARGET_DOMAINS},
        "fuse_adapters": pairs,
        "evaluate_llm": pairs | {"split": SPLITS},
        "merge_adapters": {"domain": TARGET_DOMAINS, "method": MERGE_METHODS},
        "fuse_control": pairs | {"control": CONTROLS_ON},
        "evaluate_grid": pairs | {"grid": GRID_VARIANTS, "split": "val"},
        "evaluate_selected": pairs | {"grid": GRID_VARIANTS},
    }[name]
    if replicate:
        name, wildcards = f"{name}_replicate", wildcards | {"replicate": replicate}
    return expand(getattr(rules, name).benchmark, **wildcards)


def benchmarks():
    """The benchmark file of every job that has one: the report's cost table."""
    files = expand(rules.ingest_domain.benchmark, domain=DOMAINS)
    files += expand(rules.build_examples.benchmark, domain=DOMAINS)
    files += expand(rules.build_instructions.benchmark, domain=DOMAINS)
    model = ["train_domain_adapter", "fuse_adapters", "evaluate_llm"]
    if TRAIN_GENERAL:
        files += [rules.pool_general_instructions.benchmark]
        model.append("train_general_adapter")
    if MERGE_METHODS:
        model.append("merge_adapters")
    if CONTROLS_ON:
        model.append("fuse_control")
    if GRID_VARIANTS:
        model += ["evaluate_grid", "evaluate_selected"]
    files += [
        f
        for r in REPLICATES
        for name in model
        if name != "train_general_adapter" or trains_general(config, r)
        for f in model_benchmarks(name, r)
    ]
    if config["evaluate"]["baselines"]:
        files += expand(
            rules.evaluate_baselines.benchmark,
            domain=TARGET_DOMAINS,
            scenario=SCENARIOS,
        )
    return files


def report_inputs(wildcards):
    """Every file the report reads."""
    return {
        "evaluations": evaluations(),
        "fusions": fusions(),
        "adapters": adapters(),
        "quality": expand("results/data/{domain}/quality.json", domain=TARGET_DOMAINS),
        "benchmarks": benchmarks(),
    }


def all_outputs():
    outputs = expand("results/data/{domain}/instructions.parquet", domain=DOMAINS)
    if TRAIN_GENERAL:
        outputs.append("results/data/general/instructions.parquet")
    outputs += adapters()
    if HAS_GENERAL:
        outputs += fusions()
        outputs += evaluations()
        outputs.append("results/report/summary.md")
    return outputs
