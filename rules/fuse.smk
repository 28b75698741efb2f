# Fusion stage: mixing weights learned without labels, exported as one PEFT adapter.


if GROUP_FUSION:
    # One job, and one load of the base model, per (domain, scenario): every lr of its grid.
    for _scenario in SCENARIOS:

        rule:
            name:
                f"fuse_{_scenario}"
            input:
                general=GENERAL_ADAPTER,
                domain="results/adapters/{domain}",
                data="results/data/{domain}/instructions.parquet",
                base=base_model_input,
            output:
                [directory(d) for d in fusion_dirs("{domain}", _scenario)],
            log:
                f"logs/fusion/{{domain}}/{_scenario}.log",
            benchmark:
                f"results/benchmarks/fusion/{{domain}}/{_scenario}.tsv"
            wildcard_constraints:
                domain="|".join(TARGET_DOMAINS) or "^$",
            conda:
                "../envs/molorec.yaml"
            threads: stage_resource("fuse", "threads")
            resources:
                **stage_resources("fuse"),
            params:
                base=BASE_MODEL,
                scenario=_scenario,
                settings=fusion_settings,
                n_prompts=config["fusion"]["n_prompts"][_scenario],
                adapt_on=config["fusion"]["adapt_on"],
                prompt_choice=config["fusion"]["prompt_choice"],
                out_dirs=lambda w, sc=_scenario: fusion_lr_dirs(w.domain, sc),
            script:
                "../workflow/scripts/fuse_adapters.py"

else:
    # One job per lr: more jobs to spread over GPUs, one model load each.

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
            scenario=lambda w: w.scenario,
            settings=fusion_settings,
            n_prompts=lambda w: config["fusion"]["n_prompts"][w.scenario],
            adapt_on=config["fusion"]["adapt_on"],
            prompt_choice=config["fusion"]["prompt_choice"],
            out_dirs=lambda w, output: [[float(w.lr), output[0]]],
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
