"""Every stage's settings from the validated config, built here and nowhere else. The rules
pass them on as params, so a job reruns when a setting it reads changes, and only then;
the defaults are the schema's (molorec.schema), never a stage's own."""

from __future__ import annotations

from dataclasses import dataclass, fields

from molorec.io.formats import FORMATS
from molorec.schema import defaults

_DATA, _TRAIN, _FUSION = defaults("data"), defaults("train"), defaults("fusion")
SEED = 42  # the stages' seed where a caller gives none (config.yaml must: the schema requires it)


@dataclass(frozen=True)
class ExampleSettings:
    """How one domain's examples are built (molorec.data.examples)."""

    seed: int
    domain: str
    role: str  # general | target
    n_candidates: int = _DATA["n_candidates"]
    answer: str = _DATA["answer"]  # target_plus_random | target_only
    answer_size: int = _DATA["answer_size"]
    max_history: int = _DATA["max_history"]
    domain_train_samples: int = _DATA["domain_train_samples"]
    cold_item_fraction: float = _DATA["cold_item_fraction"]
    selection_fraction: float = _DATA["selection_fraction"]
    held_out_negatives: str = _DATA["held_out_negatives"]  # matched | any


@dataclass
class TrainSettings:
    """One adapter's LoRA fine-tuning (molorec.train)."""

    lora_r: int = _TRAIN["lora_r"]
    lora_alpha: int = _TRAIN["lora_alpha"]
    lora_dropout: float = _TRAIN["lora_dropout"]
    target_modules: str | list[str] = _TRAIN["target_modules"]
    lr: float = _TRAIN["lr"]
    weight_decay: float = _TRAIN["weight_decay"]
    warmup_ratio: float = _TRAIN["warmup_ratio"]
    epochs: float = _TRAIN["epochs"]
    max_steps: int = _TRAIN["max_steps"]  # > 0 stops early (tests, smoke runs)
    max_rows: int = _TRAIN["max_rows"]  # > 0: a fixed subset of the rows (molorec.train)
    per_device_batch: int = _TRAIN["per_device_batch"]
    grad_accum: int = _TRAIN["grad_accum"]
    max_length: int = _TRAIN["max_length"]
    seed: int = SEED
    gradient_checkpointing: bool = _TRAIN["gradient_checkpointing"]
    precision: str = _TRAIN["precision"]  # auto (bf16 where native: molorec.model) | fp32 | bf16
    save_every: int = _TRAIN["save_every"]
    keep_checkpoints: int = _TRAIN["keep_checkpoints"]

    @classmethod
    def from_dict(cls, d: dict) -> TrainSettings:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class FusionSettings:
    """One fusion run (molorec.fusion): the mixture, its adaptation and the prompts it
    adapts on; the lr is the one run of the grid's."""

    lr: float = 1.0
    steps: int = _FUSION["steps"]  # passes over the adaptation prompts
    # pooled (the original's): scored tokens pooled across prompts, one backward of the mean
    # entropy / accumulation per tokens_per_backward of them, an optimizer step after every
    # accumulation-th backward. prompt: a step per prompt batch (or per tokens_per_step).
    schedule: str = _FUSION["schedule"]
    tokens_per_backward: int = _FUSION["tokens_per_backward"]
    accumulation: int = _FUSION["accumulation"]
    prompts_per_step: int = _FUSION["prompts_per_step"]  # schedule prompt
    # schedule prompt: scored tokens per step; 0 = a prompt batch's
    tokens_per_step: int = _FUSION["tokens_per_step"]
    granularity: str = _FUSION["granularity"]
    activation: str = _FUSION["activation"]
    temperature: float = _FUSION["temperature"]
    k: int = _FUSION["k"]
    max_new_tokens: int = _FUSION["max_new_tokens"]
    seed: int = SEED
    # Off by default (the paper's method): l2 adds strength * sum((theta - theta_0)^2) to
    # the entropy; floor keeps every weight in [strength, 1 - strength] (molorec.fusion.GUARDS).
    guard: str = _FUSION["guard"]
    guard_strength: float = _FUSION["guard_strength"]
    require_signal: bool = _FUSION["require_signal"]  # a run with no signal is an error
    # Greedy decoding (no gradient) through merged weights W + B diag(w s) A, kept until
    # the next step: one matmul per layer instead of three, one copy of the wrapped layers'
    # weights; the same answers in fp32, in bf16 rounded otherwise (answers may differ).
    merge_for_decoding: bool = _FUSION["merge_for_decoding"]
    precision: str = "auto"  # model.precision: auto (bf16 where native) | fp32 | bf16
    # The prompts adapted on: the first n_prompts (None: all) of the adapt_on split,
    # chosen by prompt_choice (molorec.fusion.adaptation_rows).
    n_prompts: int | None = None
    adapt_on: str = _FUSION["adapt_on"]
    prompt_choice: str = _FUSION["prompt_choice"]
    # What adaptation minimises (molorec.fusion.OBJECTIVES): entropy, label-free, for
    # molorec; answer_nll, the labelled answers' loss, for the molorec_supervised control
    # only (not a config key: molorec itself never reads a label).
    objective: str = "entropy"

    @classmethod
    def from_dict(cls, d: dict) -> FusionSettings:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# What reading a domain's dumps depends on: its format's inputs and options (the registry,
# molorec.io.formats), the truncation policy and the rating threshold; not its role or
# prompt, so changing those does not re-read it.
INGEST_KEYS = tuple(
    dict.fromkeys(
        [
            "format",
            *(key for raw in FORMATS.values() for key in (*raw.keys, *raw.options)),
            "on_truncated",
            "min_rating",
        ]
    )
)
# The fusion settings that choose the prompts a scenario adapts on.
ADAPTATION_KEYS = ("n_prompts", "adapt_on", "prompt_choice")


def ingest_spec(config: dict, domain: str) -> dict:
    spec = config["domains"][domain]
    return {k: spec[k] for k in INGEST_KEYS if k in spec}


def ingest_settings(config: dict) -> dict:
    data = config["data"]
    return {k: data[k] for k in ("kcore", "max_malformed_fraction")}


def example_settings(config: dict, domain: str) -> ExampleSettings:
    data = config["data"]
    taken = {f.name: data[f.name] for f in fields(ExampleSettings) if f.name in data}
    role = config["domains"][domain]["role"]
    return ExampleSettings(seed=config["seed"], domain=domain, role=role, **taken)


def cold_item_settings(config: dict, domain: str) -> dict:
    """What the cold items are drawn from (molorec.data.examples.cold_items)."""
    keys = ("seed", "domain", "role", "cold_item_fraction")
    return {k: v for k, v in vars(example_settings(config, domain)).items() if k in keys}


def prompt_for(config: dict, domain: str) -> dict:
    """The template of a domain: the config's prompt (the schema's by default), then the
    domain's own."""
    prompt = {k: v for k, v in config["prompt"].items() if v is not None}
    return prompt | config["domains"][domain].get("prompt", {})


def instruction_settings(config: dict, domain: str) -> dict:
    data = config["data"]
    return {
        "prompt": prompt_for(config, domain),
        "answer_size": data["answer_size"],
        "n_candidates": data["n_candidates"],
    }


def train_settings(config: dict, kind: str, replicate: int = 0) -> dict:
    """TrainSettings fields of one kind of adapter (general | domain): the common
    ``train:`` settings, then ``train.<kind>``; the seed is the replicate's (the top-level
    seed for the run itself: molorec.plan.replicate_seed) and an ``auto`` precision
    model.precision."""
    from molorec.plan import replicate_seed

    common = {k: v for k, v in config["train"].items() if k not in ("general", "domain")}
    settings = {"seed": config["seed"], **common, **config["train"].get(kind, {})}
    # a train.seed of the config is the run's own; a replicate offsets it as it does seed
    settings["seed"] += replicate_seed(config, replicate) - config["seed"]
    if settings.get("precision", "auto") == "auto":
        settings["precision"] = config["model"].get("precision", "auto")
    return dict(sorted(settings.items()))


# The fusion controls (molorec.plan.CONTROLS): what each changes in molorec's settings.
CONTROL_SETTINGS = {
    "molorec_selection": {"adapt_on": "val"},
    "molorec_supervised": {"adapt_on": "val", "objective": "answer_nll"},
}


def fusion_settings(
    config: dict,
    domain: str,
    scenario: str | None = None,
    control: str | None = None,
    replicate: int = 0,
) -> dict:
    """FusionSettings fields of a target domain (its own fusion keys, e.g. k, over the
    common ones) without the lr, which each run of the grid sets. With a scenario, the
    choice and count of the prompts it adapts on; without (the uniform mixture), none.
    ``control``: a fusion control's settings (CONTROL_SETTINGS) over molorec's; the seed
    is the ``replicate``'s (molorec.plan.replicate_seed)."""
    from molorec.plan import replicate_seed

    if control is not None:
        settings = fusion_settings(config, domain, scenario, replicate=replicate)
        return dict(sorted((settings | CONTROL_SETTINGS[control]).items()))
    fusion = config["fusion"] | config["domains"][domain].get("fusion", {})
    skipped = {"lr", "seed", "precision", "objective", *ADAPTATION_KEYS}
    settings = {f.name: fusion[f.name] for f in fields(FusionSettings) if f.name not in skipped}
    seed = replicate_seed(config, replicate)
    settings |= {"seed": seed, "precision": config["model"]["precision"]}
    if scenario is not None:
        settings |= {
            "n_prompts": fusion["n_prompts"][scenario],
            "adapt_on": fusion["adapt_on"],
            "prompt_choice": fusion["prompt_choice"],
        }
    return dict(sorted(settings.items()))


def eval_settings(config: dict) -> dict:
    """What an evaluation computes. The fusion settings that choose the adapted prompts
    come along: metrics.json states the overlap with them, and evaluate.exclude_adapted
    removes it."""
    fusion = config["fusion"]
    return {
        "seed": config["seed"],
        "precision": config["model"]["precision"],
        "adaptation": {k: fusion[k] for k in ADAPTATION_KEYS},
    } | config["evaluate"]
