# Fusion stage: mixing weights learned without labels, exported as one PEFT adapter.


rule fuse_adapters:
    input:
        general=GENERAL_ADAPTER,
        domain="results/adapters/{domain}",
        data="results/data/{domain}/instructions.parquet",
        base=base_model_input,
    output:
        directory("results/fusion/{domain}/{scenario}/lr{lr}"),
    log:
        "logs/fusion/{domain}/{scenario}/lr{lr}.log",
    benchmark:
        "results/benchmarks/fusion/{domain}/{scenario}/lr{lr}.tsv"
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
        scenario="warm|cold",
        lr="[0-9.e+-]+",
    conda:
        "../envs/molorec.yaml"
    threads: stage_resource("fuse", "threads")
    resources:
        **stage_resources("fuse"),
    params:
        base=BASE_MODEL,
        settings=fusion_settings,
        n_prompts=lambda wildcards: config["fusion"]["n_prompts"][wildcards.scenario],
        adapt_on=config["fusion"]["adapt_on"],
        prompt_choice=config["fusion"]["prompt_choice"],
    script:
        "../workflow/scripts/fuse_adapters.py"


rule uniform_adapter:
    input:
        general=GENERAL_ADAPTER,
        domain="results/adapters/{domain}",
        base=base_model_input,
    output:
        directory("results/fusion/{domain}/uniform"),
    log:
        "logs/fusion/{domain}/uniform.log",
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
    conda:
        "../envs/molorec.yaml"
    threads: 1
    resources:
        mem_mb=stage_resource("fuse", "mem_mb"),
        runtime=30,
    params:
        base=BASE_MODEL,
        settings=fusion_settings,
    script:
        "../workflow/scripts/uniform_adapter.py"
