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
    lr_variants,
    report_variants,
    run_variants,
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
GENERAL_ADAPTER = SHARED_GENERAL or adapter_dir("general")
TRAIN_GENERAL = bool(GENERAL_DOMAINS)
HAS_GENERAL = TRAIN_GENERAL or bool(SHARED_GENERAL)


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
    """One process per GPU: accelerate launch for several, plain python otherwise."""
    if resources.gpu > 1:
        return f"accelerate launch --multi_gpu --num_machines 1 --num_processes {resources.gpu}"
    return "python"


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


def run_adapter(domain, scenario, variant):
    """The input an LLM variant's adapter comes from: a fused lr is a folder inside its
    fusion job's output, so the job's output is the input."""
    if variant.startswith("lr"):
        return fusion_dir(domain, scenario)
    return variant_adapter(domain, scenario, variant, GENERAL_ADAPTER)


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
    d, sc, sp = wildcards.domain, wildcards.scenario, wildcards.split
    adapters = [run_adapter(d, sc, v) for v in run_variants(config, sc, sp)]
    return eval_data_inputs(d) | {
        "adapters": list(dict.fromkeys(a for a in adapters if a is not None)),
    }


def eval_jobs(wildcards):
    """[variant, adapter folder or None, output folder] of every variant of one job."""
    d, sc, sp = wildcards.domain, wildcards.scenario, wildcards.split
    return [
        [v, variant_adapter(d, sc, v, GENERAL_ADAPTER), variant_dir(d, sc, v, sp)]
        for v in run_variants(config, sc, sp)
    ]


def baseline_outputs(name):
    """One output file of every configured baseline, {domain} and {scenario} left open."""
    return [
        f"{variant_dir('{domain}', '{scenario}', b)}/{name}"
        for b in config["evaluate"]["baselines"]
    ]


def select_inputs(wildcards):
    """The selection set's and test's evaluation folders of the scenario's fused lrs."""
    d, sc = wildcards.domain, wildcards.scenario
    return {split: eval_dir(d, sc, split) for split in SPLITS}


# Grid variants (molorec.plan.grid_variants): peft merges and fusion controls, each with
# merge or fusion jobs, evaluation jobs and a selection of its own.
MERGE_METHODS = merge_methods(config)
CONTROLS_ON = controls(config)
GRID_VARIANTS = grid_variants(config)
GRID_SELECTED_DIR = variant_dir("{domain}", "{scenario}", "{grid}")


def grid_adapter(domain, scenario, grid, point):
    """The folder of one point of a grid variant: its adapter lies in it, under adapter/."""
    return f"{grid_source(domain, scenario, grid)}/{point}"


def grid_eval_inputs(wildcards):
    """evaluate_llm's inputs, with the grid variant's job output as the adapters."""
    d, sc = wildcards.domain, wildcards.scenario
    return eval_data_inputs(d) | {"adapters": [grid_source(d, sc, wildcards.grid)]}


def grid_eval_jobs(wildcards):
    """[point, adapter folder, output folder] of every point of a grid variant."""
    d, sc, g, sp = wildcards.domain, wildcards.scenario, wildcards.grid, wildcards.split
    return [
        [p, grid_adapter(d, sc, g, p), f"{grid_eval_dir(d, sc, g, sp)}/{p}"]
        for p in grid_points(config, g, sc)
    ]


def selected_eval_inputs(wildcards):
    """evaluate_llm's inputs, with the grid variant's adapters and its selection."""
    d, sc, g = wildcards.domain, wildcards.scenario, wildcards.grid
    return grid_eval_inputs(wildcards) | {
        "selection": f"{variant_dir(d, sc, g)}/selection.json"
    }


def selected_eval_jobs(wildcards):
    """The chosen point's job: {selected} is filled in from the selection (evaluate_llm.py)."""
    d, sc, g = wildcards.domain, wildcards.scenario, wildcards.grid
    return [[g, grid_adapter(d, sc, g, "{selected}"), variant_dir(d, sc, g)]]


def grid_outputs(d):
    """Every merge and control fusion output of a target domain."""
    merges = [merge_dir(d, m) for m in MERGE_METHODS]
    return merges + [control_dir(d, c, sc) for c in CONTROLS_ON for sc in SCENARIOS]


def evaluations():
    """Every evaluation output: the LLM jobs' folders, the selections, the baselines."""
    outputs = []
    for d in TARGET_DOMAINS:
        for sc in SCENARIOS:
            outputs += [eval_dir(d, sc, sp) for sp in SPLITS]
            outputs.append(f"{variant_dir(d, sc, SELECTED)}/selection.json")
            for g in GRID_VARIANTS:
                outputs.append(grid_eval_dir(d, sc, g, "val"))
                outputs += [
                    f"{variant_dir(d, sc, g)}/{name}"
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
        for d in TARGET_DOMAINS
        for path in [uniform_dir(d)]
        + [fusion_dir(d, sc) for sc in SCENARIOS]
        + grid_outputs(d)
    ]


def benchmarks():
    """The benchmark file of every job that has one: the report's cost table."""
    files = expand(rules.ingest_domain.benchmark, domain=DOMAINS)
    files += expand(rules.build_examples.benchmark, domain=DOMAINS)
    files += expand(rules.build_instructions.benchmark, domain=DOMAINS)
    if TRAIN_GENERAL:
        files += [rules.pool_general_instructions.benchmark]
        files += [rules.train_general_adapter.benchmark]
    files += expand(rules.train_domain_adapter.benchmark, domain=TARGET_DOMAINS)
    pairs = {"domain": TARGET_DOMAINS, "scenario": SCENARIOS}
    files += expand(rules.fuse_adapters.benchmark, **pairs)
    files += expand(rules.evaluate_llm.benchmark, split=SPLITS, **pairs)
    if MERGE_METHODS:
        files += expand(
            rules.merge_adapters.benchmark, domain=TARGET_DOMAINS, method=MERGE_METHODS
        )
    if CONTROLS_ON:
        files += expand(rules.fuse_control.benchmark, control=CONTROLS_ON, **pairs)
    if GRID_VARIANTS:
        files += expand(
            rules.evaluate_grid.benchmark, grid=GRID_VARIANTS, split=SPLITS, **pairs
        )
    if config["evaluate"]["baselines"]:
        files += expand(rules.evaluate_baselines.benchmark, **pairs)
    return files


def report_inputs(wildcards):
    """Every file the report reads."""
    adapters = (["general"] if TRAIN_GENERAL else []) + TARGET_DOMAINS
    return {
        "evaluations": evaluations(),
        "fusions": fusions(),
        "adapters": [adapter_dir(a) for a in adapters],
        "quality": expand("results/data/{domain}/quality.json", domain=TARGET_DOMAINS),
        "benchmarks": benchmarks(),
    }


def all_outputs():
    outputs = expand("results/data/{domain}/instructions.parquet", domain=DOMAINS)
    if TRAIN_GENERAL:
        outputs.append("results/data/general/instructions.parquet")
        outputs.append(GENERAL_ADAPTER)
    outputs += [adapter_dir(d) for d in TARGET_DOMAINS]
    if HAS_GENERAL:
        outputs += fusions()
        outputs += evaluations()
        outputs.append("results/report/summary.md")
    return outputs
