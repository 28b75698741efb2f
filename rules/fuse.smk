# Fusion stage: mixing weights learned without labels, exported as one PEFT adapter.


# One job, and one load of the base model, per (domain, scenario): every lr of its grid,
# each from the same start and a fresh optimizer, in its own lr<lr>/ folder.
rule fuse_adapters:
    input:
        general=general_of,
        domain=domain_adapter_of,
        data="results/data/{domain}/instructions.parquet",
        base=base_model_input,
    output:
        directory(fusion_dir("{domain}", "{scenario}")),
    log:
        "logs/fusion/{domain}/{scenario}.log",
    benchmark:
        "results/benchmarks/fusion/{domain}/{scenario}.tsv"
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
    conda:
        "../envs/molorec.yaml"
    threads: stage_resource("fuse", "threads")
    resources:
        **stage_resources("fuse"),
    params:
        base=BASE_MODEL,
        settings=lambda w: fusion_settings(
            config, w.domain, w.scenario, replicate=replicate_of(w)
        ),
        lrs=fused_lrs,
    script:
        "../workflow/scripts/fuse_adapters.py"


rule uniform_adapter:
    input:
        general=general_of,
        domain=domain_adapter_of,
        base=base_model_input,
    output:
        directory(uniform_dir("{domain}")),
    log:
        "logs/fusion/{domain}/uniform.log",
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
    conda:
        "../envs/molorec.yaml"
    threads: stage_resource("fuse", "threads")
    resources:
        mem_mb=stage_resource("fuse", "mem_mb"),
        runtime=30,
    params:
        base=BASE_MODEL,
        settings=lambda w: fusion_settings(config, w.domain, replicate=replicate_of(w)),
    script:
        "../workflow/scripts/uniform_adapter.py"


# One job per (domain, merge method): every point of its grid (merges.weights x
# merges.densities) from one load of the base model, each in its own folder.
rule merge_adapters:
    input:
        general=general_of,
        domain=domain_adapter_of,
        base=base_model_input,
    output:
        directory(merge_dir("{domain}", "{method}")),
    log:
        "logs/merges/{domain}/{method}.log",
    benchmark:
        "results/benchmarks/merges/{domain}/{method}.tsv"
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
        method="|".join(MERGE_METHODS) or "^$",
    conda:
        "../envs/molorec.yaml"
    threads: stage_resource("fuse", "threads")
    resources:
        mem_mb=stage_resource("fuse", "mem_mb"),
        runtime=stage_resource("fuse", "runtime"),
    params:
        base=BASE_MODEL,
        points=lambda w: merge_grid(config, w.method),
        seed=seed_of,
    script:
        "../workflow/scripts/merge_adapters.py"


# A fusion control (controls): molorec's fusion job with the control's settings.
use rule fuse_adapters as fuse_control with:
    output:
        directory(control_dir("{domain}", "{control}", "{scenario}")),
    log:
        "logs/fusion/{domain}/{control}/{scenario}.log",
    benchmark:
        "results/benchmarks/fusion/{domain}/{control}/{scenario}.tsv"
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
        control="|".join(CONTROLS_ON) or "^$",
    params:
        base=BASE_MODEL,
        settings=lambda w: fusion_settings(
            config, w.domain, w.scenario, w.control, replicate_of(w)
        ),
        lrs=fused_lrs,


# Replicates: the same mixtures and merges of the replicate's adapters, with its seed.
use rule fuse_adapters as fuse_adapters_replicate with:
    output:
        directory(fusion_dir("{domain}", "{scenario}", REPLICATE_ROOT)),
    log:
        "logs/replicates/{replicate}/fusion/{domain}/{scenario}.log",
    benchmark:
        "results/benchmarks/fusion/replicates/{replicate}/{domain}/{scenario}.tsv"


use rule uniform_adapter as uniform_adapter_replicate with:
    output:
        directory(uniform_dir("{domain}", REPLICATE_ROOT)),
    log:
        "logs/replicates/{replicate}/fusion/{domain}/uniform.log",


use rule merge_adapters as merge_adapters_replicate with:
    output:
        directory(merge_dir("{domain}", "{method}", REPLICATE_ROOT)),
    log:
        "logs/replicates/{replicate}/merges/{domain}/{method}.log",
    benchmark:
        "results/benchmarks/merges/replicates/{replicate}/{domain}/{method}.tsv"


use rule fuse_control as fuse_control_replicate with:
    output:
        directory(control_dir("{domain}", "{control}", "{scenario}", REPLICATE_ROOT)),
    log:
        "logs/replicates/{replicate}/fusion/{domain}/{control}/{scenario}.log",
    benchmark:
        "results/benchmarks/fusion/replicates/{replicate}/{domain}/{control}/{scenario}.tsv"
