"""The work a config asks for and where each stage writes it: the scenarios, splits and
variants, every output folder, and the GPU jobs. The rules (rules/common.smk), the cost plan
(molorec.cost) and the report read them from here, so the three cannot drift apart.

Layout under ``results/`` (paths relative to the workflow's directory):

    fusion/{domain}/{scenario}/lr{lr}/          one fusion job per (domain, scenario)
    fusion/{domain}/uniform/                    the equal-weight mixture
    eval/{domain}/{scenario}/{split}/{variant}/ one LLM evaluation job per (domain,
                                                scenario, split): every variant of it
    eval/{domain}/{scenario}/molorec/           the lr chosen on the selection set
    eval/{domain}/{scenario}/{baseline}/        the non-LLM baselines (test)

Grid variants (merges.methods, controls) each have jobs of their own, so that adding one
plans only its jobs:

    merges/{domain}/{method}/{point}/           one merge job per (domain, method)
    fusion/{domain}/{control}/{scenario}/lr{lr}/ one fusion job per (domain, control, scenario)
    eval/{domain}/{scenario}/{variant}/val/{point}/  every point on the selection set
    eval/{domain}/{scenario}/{variant}/         the point chosen there, on test
"""

from __future__ import annotations

from dataclasses import dataclass, field

RESULTS = "results"
SCENARIOS = ("warm", "cold")
# test: every variant; val: the selection set (the fused lrs only, to choose one).
SPLITS = ("test", "val")
# LLM variants whose adapter is fixed (or none): evaluated on test only.
FIXED_VARIANTS = ("base", "general", "domain", "uniform")
# The fused adapter of the lr that the selection set chose.
SELECTED = "molorec"
# The LLM variants of the report, before the baselines.
VARIANTS = (*FIXED_VARIANTS, SELECTED)


# --- replicates: the adapters, mixtures and evaluations again with other seeds -----------


def replicates(config: dict) -> list[int]:
    """0 (the run itself, under results/) and every further replicate (replicates: N)."""
    return list(range(config.get("replicates", 1)))


def replicate_root(replicate: int | str, root: str = RESULTS) -> str:
    """Where a replicate's adapters, fusion, merges and evaluations lie: results/ for the
    run itself, results/replicates/<r>/ for another; the data stage is shared by all."""
    return root if str(replicate) == "0" else f"{root}/replicates/{replicate}"


def replicate_seed(config: dict, replicate: int) -> int:
    """The training, fusion and merge seed of a replicate (the data's stays config seed)."""
    return config["seed"] + int(replicate)


def trains_general(config: dict, replicate: int | str = 0) -> bool:
    """Whether a replicate trains a general adapter: where the config has general domains,
    replicate 0 does, and every other one unless replicates_share_general."""
    if not domains_with_role(config, "general"):
        return False
    return str(replicate) == "0" or not config.get("replicates_share_general", False)


def general_dir(config: dict, replicate: int | str = 0, root: str = RESULTS) -> str:
    """The general adapter a replicate mixes: one built elsewhere (general_adapter), its
    own, or replicate 0's where the replicates share it."""
    if config.get("general_adapter"):
        return config["general_adapter"]
    own = replicate if trains_general(config, replicate) else 0
    return adapter_dir("general", replicate_root(own, root))


def shared_variants(config: dict) -> list[str]:
    """The LLM variants no replicate's seed changes, evaluated in replicate 0 only: the base
    model, and the general adapter where every replicate mixes the same one."""
    general = config.get("general_adapter") or config.get("replicates_share_general")
    return ["base"] + (["general"] if general else [])


def lr_label(lr: float) -> str:
    """A learning rate as it appears in paths: 0.5 -> 0.5, 1.0 -> 1, 1e-05 -> 1e-05."""
    return f"{lr:g}"


def lr_variants(config: dict, scenario: str) -> list[str]:
    """The fused variants of a scenario, one per lr of its grid: lr0.5, lr1, ..."""
    return [f"lr{lr_label(lr)}" for lr in config["fusion"]["lr_grid"][scenario]]


def run_variants(config: dict, scenario: str, split: str, replicate: int | str = 0) -> list[str]:
    """The LLM variants one evaluation job of a scenario and split evaluates, in order; a
    replicate beyond the first leaves out the shared ones (shared_variants)."""
    fixed = list(FIXED_VARIANTS) if split == "test" else []
    if str(replicate) != "0":
        fixed = [v for v in fixed if v not in shared_variants(config)]
    return fixed + lr_variants(config, scenario)


def is_run(variant: str) -> bool:
    """An LLM variant an evaluation job writes (not the selection, not a baseline)."""
    return variant in FIXED_VARIANTS or variant.startswith("lr")


def report_variants(config: dict) -> list[str]:
    """The variants of the report's tables: the LLM ones, the grid variants, then the
    configured baselines."""
    return [*VARIANTS, *grid_variants(config), *config["evaluate"]["baselines"]]


# --- grid variants: a grid of settings evaluated on both splits, one chosen on val ------------

MERGE = "merge_"  # merge_<method>: peft's add_weighted_adapter (molorec.merges)
CONTROLS = ("molorec_selection", "molorec_supervised")  # fusion controls (molorec.fusion)


def merge_methods(config: dict) -> list[str]:
    return list(config.get("merges", {}).get("methods", []))


def controls(config: dict) -> list[str]:
    return list(config.get("controls", []))


def grid_variants(config: dict) -> list[str]:
    """merge_<method> of every configured merge method, then the configured controls."""
    return [f"{MERGE}{m}" for m in merge_methods(config)] + controls(config)


def is_merge(variant: str) -> bool:
    return variant.startswith(MERGE)


def merge_method(variant: str) -> str:
    return variant[len(MERGE) :]


def merge_grid(config: dict, method: str) -> list[dict]:
    """The points of a merge method's grid: its label (the folder name), the [general,
    domain] weights and the density (None for the methods that do not prune)."""
    from molorec.merges import PRUNING

    merges = config["merges"]
    densities = merges["densities"] if method in PRUNING else [None]
    points = []
    for weights in merges["weights"]:
        for density in densities:
            label = "w" + "_".join(f"{w:g}" for w in weights)
            label += "" if density is None else f"_d{density:g}"
            points.append({"label": label, "weights": list(weights), "density": density})
    return points


def grid_points(config: dict, variant: str, scenario: str) -> list[str]:
    """The folder names of a grid variant's points: a merge's grid, a control's lrs."""
    if is_merge(variant):
        return [p["label"] for p in merge_grid(config, merge_method(variant))]
    return lr_variants(config, scenario)


def merge_dir(domain: str, method: str, root: str = RESULTS) -> str:
    """The output of one merge job: a folder per point of the method's grid."""
    return f"{root}/merges/{domain}/{method}"


def control_dir(domain: str, control: str, scenario: str, root: str = RESULTS) -> str:
    """The output of one control's fusion job: a folder per lr of the scenario's grid."""
    return f"{root}/fusion/{domain}/{control}/{scenario}"


def grid_source(domain: str, scenario: str, variant: str, root: str = RESULTS) -> str:
    """The job output a grid variant's adapters lie in."""
    if is_merge(variant):
        return merge_dir(domain, merge_method(variant), root)
    return control_dir(domain, variant, scenario, root)


def grid_eval_dir(domain: str, scenario: str, variant: str, split: str, root: str = RESULTS) -> str:
    """The output of one grid variant's evaluation job: a folder per point."""
    return f"{root}/eval/{domain}/{scenario}/{variant}/{split}"


def adapter_dir(domain: str, root: str = RESULTS) -> str:
    return f"{root}/adapters/{domain}"


def fusion_dir(domain: str, scenario: str, root: str = RESULTS) -> str:
    """The output of one fusion job: a folder per lr of the scenario's grid."""
    return f"{root}/fusion/{domain}/{scenario}"


def fused_dir(domain: str, scenario: str, variant: str, root: str = RESULTS) -> str:
    """One fused adapter (variant lr<lr>) inside its fusion job's folder."""
    return f"{fusion_dir(domain, scenario, root)}/{variant}"


def uniform_dir(domain: str, root: str = RESULTS) -> str:
    return f"{root}/fusion/{domain}/uniform"


def eval_dir(domain: str, scenario: str, split: str, root: str = RESULTS) -> str:
    """The output of one LLM evaluation job: a folder per variant it evaluates."""
    return f"{root}/eval/{domain}/{scenario}/{split}"


def variant_dir(
    domain: str, scenario: str, variant: str, split: str = "test", root: str = RESULTS
) -> str:
    """Where a variant's predictions.parquet and metrics.json lie."""
    if is_run(variant):
        return f"{eval_dir(domain, scenario, split, root)}/{variant}"
    return f"{root}/eval/{domain}/{scenario}/{variant}"


def variant_adapter(
    domain: str, scenario: str, variant: str, general: str, root: str = RESULTS
) -> str | None:
    """The adapter folder an LLM variant is evaluated with; None for the base model.
    ``general``: the general adapter's folder (trained here or shared)."""
    if variant == "base":
        return None
    if variant == "general":
        return general
    if variant == "domain":
        return adapter_dir(domain, root)
    if variant == "uniform":
        return uniform_dir(domain, root)
    if variant.startswith("lr"):
        return fused_dir(domain, scenario, variant, root)
    raise ValueError(f"{variant!r} is not an LLM variant")


def domains_with_role(config: dict, role: str) -> list[str]:
    return sorted(d for d, spec in config["domains"].items() if spec["role"] == role)


@dataclass(frozen=True)
class Job:
    """One GPU job (one load of the base model): its rule and what it covers."""

    rule: str
    domain: str = "general"
    scenario: str | None = None
    split: str | None = None
    variants: list[str] = field(default_factory=list)
    grid: str | None = None  # the grid variant of a merge, control or grid evaluation job
    replicate: int = 0


# Every GPU rule, and the stage of the cost plan (molorec.cost) its work counts in.
GPU_RULES = {
    "train_general_adapter": "train",
    "train_domain_adapter": "train",
    "fuse_adapters": "fusion",
    "fuse_control": "fusion",
    "uniform_adapter": "fusion",  # the uniform mixture only loads the model
    "merge_adapters": "fusion",  # merges load the model and run no forward pass
    "evaluate_llm": "evaluate",
    "evaluate_grid": "evaluate",
    "evaluate_selected": "evaluate",
}
# Every GPU rule has a copy for the replicates beyond the first (rules/*.smk: use rule).
REPLICATE_COPY = "_replicate"
GPU_RULES |= {f"{rule}{REPLICATE_COPY}": stage for rule, stage in GPU_RULES.items()}


def gpu_jobs(config: dict) -> list[Job]:
    """Every GPU job the workflow plans for ``config``, in the order of the stages."""
    return [job for r in replicates(config) for job in replicate_jobs(config, r)]


def replicate_jobs(config: dict, replicate: int) -> list[Job]:
    """The GPU jobs of one replicate: a general adapter trained here is trained again
    (unless the replicates share it: trains_general), and everything after it."""
    jobs = []
    r = replicate
    if trains_general(config, r):
        jobs.append(Job("train_general_adapter", replicate=r))
    targets = domains_with_role(config, "target")
    jobs += [Job("train_domain_adapter", d, replicate=r) for d in targets]
    if not (domains_with_role(config, "general") or config.get("general_adapter")):
        return jobs  # nothing to mix with
    for d in targets:
        jobs += [
            Job("fuse_adapters", d, sc, variants=lr_variants(config, sc), replicate=r)
            for sc in SCENARIOS
        ]
        jobs.append(Job("uniform_adapter", d, replicate=r))
        for m in merge_methods(config):
            v = MERGE + m
            jobs.append(
                Job("merge_adapters", d, variants=grid_points(config, v, ""), grid=v, replicate=r)
            )
        for c in controls(config):
            jobs += [
                Job("fuse_control", d, sc, variants=lr_variants(config, sc), grid=c, replicate=r)
                for sc in SCENARIOS
            ]
    for d in targets:
        for sc in SCENARIOS:
            for sp in SPLITS:
                jobs.append(
                    Job("evaluate_llm", d, sc, sp, run_variants(config, sc, sp, r), replicate=r)
                )
                for v in grid_variants(config):
                    # every point on the selection set; on test the chosen one only
                    if sp == "val":
                        points = grid_points(config, v, sc)
                        jobs.append(Job("evaluate_grid", d, sc, sp, points, v, r))
                    else:
                        jobs.append(Job("evaluate_selected", d, sc, sp, [v], v, r))
    return jobs
