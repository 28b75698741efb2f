import json
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from molorec.config import (
    ConfigError,
    canonical,
    check_config,
    domains_with_role,
    example_settings,
    load_schema,
    prompt_for,
    train_settings,
)
from molorec.model import TINY, built_here, is_gguf, resolve_base

SCHEMA = "../workflow/schemas/config.schema.yaml"

# Readable errors (domain, key, path) before Snakemake's own schema check.
CONFIG_SCHEMA = load_schema(workflow.source_path(SCHEMA))
try:
    check_config(config, schema=CONFIG_SCHEMA)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, schema=SCHEMA)
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


def domain_spec(wildcards):
    return config["domains"][wildcards.domain]


def ingest_spec(wildcards):
    """What reading the dumps depends on: not the role or the prompt, so changing those
    does not re-read a domain."""
    keys = ("format", "reviews", "meta", "path", "on_truncated")
    return {k: v for k, v in domain_spec(wildcards).items() if k in keys}


def raw_inputs(wildcards):
    """The raw dump files of one domain, so Snakemake reruns it when they change."""
    spec = domain_spec(wildcards)
    if spec["format"] == "mooccube":
        return [
            f"{spec['path']}/entities/user.json",
            f"{spec['path']}/entities/course.json",
        ]
    return [spec["reviews"], spec["meta"]]


def ingest_params(wildcards):
    data = config["data"]
    return {
        "kcore": data["kcore"],
        "max_malformed_fraction": data["max_malformed_fraction"],
    }


def examples_params(wildcards):
    return vars(example_settings(config, wildcards.domain))


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


def cold_item_params(wildcards):
    """What the cold items are drawn from (molorec.data.examples.cold_items)."""
    keys = ("seed", "domain", "role", "cold_item_fraction")
    return {k: v for k, v in examples_params(wildcards).items() if k in keys}


def instruction_params(wildcards):
    data = config["data"]
    return {
        "prompt": prompt_for(config, wildcards.domain),
        "answer_size": data["answer_size"],
        "n_candidates": data["n_candidates"],
    }


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
GENERAL_ADAPTER = SHARED_GENERAL or "results/adapters/general"
TRAIN_GENERAL = bool(GENERAL_DOMAINS)
HAS_GENERAL = TRAIN_GENERAL or bool(SHARED_GENERAL)
SCENARIOS = ["warm", "cold"]


def stage_resource(stage, name):
    """A job resource of a stage from config resources.<stage>; gpu 0 and 1 otherwise."""
    return config["resources"][stage].get(name, 0 if name == "gpu" else 1)


def stage_resources(stage):
    """The job resources of a stage: config resources.<stage> without threads, gpu 0 if unset.
    A profile's set-resources overrides them per rule (profiles/slurm/)."""
    resources = {"gpu": 0} | config["resources"][stage]
    resources.pop("threads", None)
    return resources


def lr_label(lr):
    """A learning rate as it appears in paths: 0.5 -> 0.5, 1.0 -> 1, 1e-05 -> 1e-05."""
    return f"{lr:g}"


def fusion_settings(wildcards):
    # A domain's own fusion keys (e.g. k) over the common ones.
    fusion = config["fusion"] | config["domains"][wildcards.domain].get("fusion", {})
    keys = (
        "steps",
        "schedule",
        "tokens_per_backward",
        "accumulation",
        "prompts_per_step",
        "tokens_per_step",
        "granularity",
        "activation",
        "temperature",
        "k",
        "guard",
        "guard_strength",
        "require_signal",
        "merge_for_decoding",
    )
    return {
        "seed": config["seed"],
        "max_new_tokens": fusion["max_new_tokens"],
        "precision": config["model"]["precision"],
    } | {key: fusion[key] for key in keys}


GROUP_FUSION = config["fusion"]["group_lrs"]


def fusion_dirs(domain, scenario):
    return [
        f"results/fusion/{domain}/{scenario}/lr{lr_label(lr)}"
        for lr in config["fusion"]["lr_grid"][scenario]
    ]


def fusion_lr_dirs(domain, scenario):
    """[lr, output folder] of every lr of a scenario's grid."""
    lrs = config["fusion"]["lr_grid"][scenario]
    return [[lr, d] for lr, d in zip(lrs, fusion_dirs(domain, scenario), strict=True)]


def fusion_outputs():
    outputs = []
    for domain in TARGET_DOMAINS:
        outputs.append(f"results/fusion/{domain}/uniform")
        for scenario in SCENARIOS:
            for lr in config["fusion"]["lr_grid"][scenario]:
                outputs.append(f"results/fusion/{domain}/{scenario}/lr{lr_label(lr)}")
    return outputs


def launcher(wildcards, resources):
    """One process per GPU: accelerate launch for several, plain python otherwise."""
    if resources.gpu > 1:
        return f"accelerate launch --multi_gpu --num_machines 1 --num_processes {resources.gpu}"
    return "python"


VARIANTS = ["base", "general", "domain", "uniform", "molorec"]


def eval_settings(wildcards):
    """What an evaluation computes; not group_variants, which only shapes the jobs. The
    fusion settings that choose the adapted prompts come along: metrics.json states the
    overlap with them, and evaluate.exclude_adapted removes it."""
    evaluate = {k: v for k, v in config["evaluate"].items() if k != "group_variants"}
    fusion = config["fusion"]
    return {
        "seed": config["seed"],
        "precision": config["model"]["precision"],
        "adaptation": {
            k: fusion[k] for k in ("n_prompts", "adapt_on", "prompt_choice")
        },
    } | evaluate


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


# The LLM variants with a fixed adapter (or none), evaluated on test; the fused adapter of
# every lr of a scenario is evaluated on the selection set (val) and test besides.
FIXED_VARIANTS = ["base", "general", "domain", "uniform"]
GROUP_EVAL = config["evaluate"]["group_variants"]


def scenario_variants(scenario, split):
    lrs = [f"lr{lr_label(lr)}" for lr in config["fusion"]["lr_grid"][scenario]]
    return (FIXED_VARIANTS if split == "test" else []) + lrs


def eval_folder(domain, scenario, split, variant):
    if variant.startswith("lr"):
        return f"results/eval/{domain}/{scenario}/{variant}/{split}"
    return f"results/eval/{domain}/{scenario}/{variant}"


def variant_adapter(domain, scenario, variant):
    """The adapter folder a variant evaluates with; None for the base model."""
    if variant == "general":
        return GENERAL_ADAPTER
    if variant == "domain":
        return f"results/adapters/{domain}"
    if variant == "uniform":
        return f"results/fusion/{domain}/uniform"
    if variant.startswith("lr"):
        return f"results/fusion/{domain}/{scenario}/{variant}"
    return None


def eval_jobs(domain, scenario, split, variants):
    """[variant, adapter or None, output folder] of every variant one job evaluates."""
    return [
        [
            v,
            variant_adapter(domain, scenario, v),
            eval_folder(domain, scenario, split, v),
        ]
        for v in variants
    ]


def eval_inputs(domain, scenario, split, variants):
    """Examples, prompts and titles of the domain, the base model and the variants' adapters."""
    data = f"results/data/{domain}"
    adapters = [variant_adapter(domain, scenario, v) for v in variants]
    return {
        "examples": f"{data}/examples.parquet",
        "instructions": f"{data}/instructions.parquet",
        "catalog": f"{data}/items.parquet",
        "base": base_model_input(None),
        "adapters": [a for a in adapters if a is not None],
    }


def eval_outputs_of(scenario, split):
    """The output files of one scenario's grouped evaluation job, {domain} left open."""
    names = ["predictions.parquet", "metrics.json"]
    names += list(ORDER_CHECK_FILES.values()) if ORDER_CHECK else []
    return [
        f"{eval_folder('{domain}', scenario, split, v)}/{name}"
        for v in scenario_variants(scenario, split)
        for name in names
    ]


def lr_outputs(wildcards, split, name):
    return [
        f"results/eval/{wildcards.domain}/{wildcards.scenario}/lr{lr_label(lr)}/{split}/{name}"
        for lr in config["fusion"]["lr_grid"][wildcards.scenario]
    ]


def select_inputs(wildcards):
    """The fused lrs' metrics (selection set and test) and test predictions, and their
    order checks when evaluate.order_check is on."""
    inputs = {
        "val": lr_outputs(wildcards, "val", "metrics.json"),
        "test": lr_outputs(wildcards, "test", "metrics.json"),
        "predictions": lr_outputs(wildcards, "test", "predictions.parquet"),
    }
    if ORDER_CHECK:
        for key, name in ORDER_CHECK_FILES.items():
            inputs[key] = lr_outputs(wildcards, "test", name)
    return inputs


def eval_outputs():
    variants = VARIANTS + config["evaluate"]["baselines"]
    outputs = expand(
        "results/eval/{domain}/{scenario}/{variant}/metrics.json",
        domain=TARGET_DOMAINS,
        scenario=SCENARIOS,
        variant=variants,
    )
    if ORDER_CHECK:  # the LLM variants' only: a baseline does not read the prompt
        outputs += expand(
            "results/eval/{domain}/{scenario}/{variant}/order_check/metrics.json",
            domain=TARGET_DOMAINS,
            scenario=SCENARIOS,
            variant=VARIANTS,
        )
        # The selection set's too: an output no target asks for never triggers its job.
        outputs += [
            f"results/eval/{domain}/{scenario}/lr{lr_label(lr)}/val/order_check/metrics.json"
            for domain in TARGET_DOMAINS
            for scenario in SCENARIOS
            for lr in config["fusion"]["lr_grid"][scenario]
        ]
    return outputs


def all_outputs():
    outputs = expand("results/data/{domain}/instructions.parquet", domain=DOMAINS)
    if TRAIN_GENERAL:
        outputs.append("results/data/general/instructions.parquet")
        outputs.append(GENERAL_ADAPTER)
    outputs += expand("results/adapters/{domain}", domain=TARGET_DOMAINS)
    if HAS_GENERAL:
        outputs += fusion_outputs()
        outputs += eval_outputs()
        outputs.append("results/report/summary.md")
    return outputs
