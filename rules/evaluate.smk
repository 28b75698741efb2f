# Evaluation stage: every variant on the same candidates, selection on validation, report.


if GROUP_EVAL:
    # One job, and one load of the base model, per (domain, scenario, split): every LLM
    # variant of it in turn (README: Evaluation jobs).
    for _scenario in SCENARIOS:
        for _split in ("test", "val"):

            rule:
                name:
                    f"evaluate_{_scenario}_{_split}"
                input:
                    unpack(
                        lambda w, sc=_scenario, sp=_split: eval_inputs(
                            w.domain, sc, sp, scenario_variants(sc, sp)
                        )
                    ),
                output:
                    eval_outputs_of(_scenario, _split),
                log:
                    f"logs/eval/{{domain}}/{_scenario}/{_split}.log",
                benchmark:
                    f"results/benchmarks/eval/{{domain}}/{_scenario}/{_split}.tsv"
                wildcard_constraints:
                    domain="|".join(TARGET_DOMAINS) or "^$",
                conda:
                    "../envs/molorec.yaml"
                threads: stage_resource("evaluate", "threads")
                resources:
                    **stage_resources("evaluate"),
                params:
                    base=BASE_MODEL,
                    scenario=_scenario,
                    split=_split,
                    settings=eval_settings,
                    prompt=instruction_params,
                    jobs=lambda w, sc=_scenario, sp=_split: eval_jobs(
                        w.domain, sc, sp, scenario_variants(sc, sp)
                    ),
                script:
                    "../workflow/scripts/evaluate_llm.py"

else:
    # One job per variant: more jobs to spread over GPUs, one model load each.

    rule evaluate_llm:
        input:
            unpack(lambda w: eval_inputs(w.domain, w.scenario, "test", [w.variant])),
        output:
            **order_check_outputs("results/eval/{domain}/{scenario}/{variant}"),
            predictions="results/eval/{domain}/{scenario}/{variant}/predictions.parquet",
            metrics="results/eval/{domain}/{scenario}/{variant}/metrics.json",
        log:
            "logs/eval/{domain}/{scenario}/{variant}.log",
        benchmark:
            "results/benchmarks/eval/{domain}/{scenario}/{variant}.tsv"
        wildcard_constraints:
            domain="|".join(TARGET_DOMAINS) or "^$",
            scenario="warm|cold",
            variant="base|general|domain|uniform",
        conda:
            "../envs/molorec.yaml"
        threads: stage_resource("evaluate", "threads")
        resources:
            **stage_resources("evaluate"),
        params:
            base=BASE_MODEL,
            scenario=lambda w: w.scenario,
            split="test",
            settings=eval_settings,
            prompt=instruction_params,
            jobs=lambda w: eval_jobs(w.domain, w.scenario, "test", [w.variant]),
        script:
            "../workflow/scripts/evaluate_llm.py"

    rule evaluate_fused:
        input:
            unpack(lambda w: eval_inputs(w.domain, w.scenario, w.split, [f"lr{w.lr}"])),
        output:
            # The order check on both splits, as in the grouped jobs (an output cannot depend
            # on a wildcard's value): the selection set's costs a second pass too.
            **order_check_outputs("results/eval/{domain}/{scenario}/lr{lr}/{split}"),
            predictions="results/eval/{domain}/{scenario}/lr{lr}/{split}/predictions.parquet",
            metrics="results/eval/{domain}/{scenario}/lr{lr}/{split}/metrics.json",
        log:
            "logs/eval/{domain}/{scenario}/lr{lr}/{split}.log",
        benchmark:
            "results/benchmarks/eval/{domain}/{scenario}/lr{lr}/{split}.tsv"
        wildcard_constraints:
            domain="|".join(TARGET_DOMAINS) or "^$",
            scenario="warm|cold",
            lr="[0-9.e+-]+",
            split="val|test",
        conda:
            "../envs/molorec.yaml"
        threads: stage_resource("evaluate", "threads")
        resources:
            **stage_resources("evaluate"),
        params:
            base=BASE_MODEL,
            scenario=lambda w: w.scenario,
            split=lambda w: w.split,
            settings=eval_settings,
            prompt=instruction_params,
            jobs=lambda w: eval_jobs(w.domain, w.scenario, w.split, [f"lr{w.lr}"]),
        script:
            "../workflow/scripts/evaluate_llm.py"


rule select_molorec:
    input:
        unpack(select_inputs),
    output:
        **order_check_outputs("results/eval/{domain}/{scenario}/molorec"),
        predictions="results/eval/{domain}/{scenario}/molorec/predictions.parquet",
        metrics="results/eval/{domain}/{scenario}/molorec/metrics.json",
        selection="results/eval/{domain}/{scenario}/molorec/selection.json",
    log:
        "logs/eval/{domain}/{scenario}/molorec.log",
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
        scenario="warm|cold",
    conda:
        "../envs/molorec.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        lrs=lambda w: [lr_label(lr) for lr in config["fusion"]["lr_grid"][w.scenario]],
    script:
        "../workflow/scripts/select_molorec.py"


# All configured baselines of a scenario in one job: each is seconds of work, less than a
# job's start. Adding a baseline is one class and one BASELINES entry (molorec.baselines);
# the schema's list of names follows the registry (tests/test_baselines.py).
if config["evaluate"]["baselines"]:

    rule evaluate_baselines:
        input:
            examples="results/data/{domain}/examples.parquet",
            interactions="results/data/{domain}/interactions.parquet",
            catalog="results/data/{domain}/items.parquet",
        output:
            predictions=expand(
                "results/eval/{{domain}}/{{scenario}}/{baseline}/predictions.parquet",
                baseline=config["evaluate"]["baselines"],
            ),
            metrics=expand(
                "results/eval/{{domain}}/{{scenario}}/{baseline}/metrics.json",
                baseline=config["evaluate"]["baselines"],
            ),
        log:
            "logs/eval/{domain}/{scenario}/baselines.log",
        benchmark:
            "results/benchmarks/eval/{domain}/{scenario}/baselines.tsv"
        wildcard_constraints:
            domain="|".join(TARGET_DOMAINS) or "^$",
            scenario="warm|cold",
        conda:
            "../envs/molorec.yaml"
        threads: 1
        resources:
            mem_mb=stage_resource("evaluate", "mem_mb"),
            runtime=stage_resource("evaluate", "runtime"),
        params:
            baselines=config["evaluate"]["baselines"],
            settings=eval_settings,
            example_settings=cold_item_params,
        script:
            "../workflow/scripts/evaluate_baselines.py"


rule report:
    input:
        metrics=eval_outputs(),
        selections=expand(
            "results/eval/{domain}/{scenario}/molorec/selection.json",
            domain=TARGET_DOMAINS,
            scenario=SCENARIOS,
        ),
    output:
        metrics=report(
            "results/report/metrics.csv",
            caption="../report/metrics.rst",
            category="Metrics",
        ),
        tests=report(
            "results/report/paired_tests.csv",
            caption="../report/summary.rst",
            category="Metrics",
        ),
        summary=report(
            "results/report/summary.md",
            caption="../report/summary.rst",
            category="Summary",
        ),
        cost="results/report/cost.csv",
        fusion_runs="results/report/fusion_runs.csv",
        plots=report(
            directory("results/report/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Plots",
        ),
    log:
        "logs/report.log",
    conda:
        "../envs/molorec.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        domains=TARGET_DOMAINS,
        scenarios=SCENARIOS,
        variants=VARIANTS + config["evaluate"]["baselines"],
        adapters=(["general"] if TRAIN_GENERAL else []) + TARGET_DOMAINS,
        seed=config["seed"],
        bootstrap=config["evaluate"]["bootstrap"],
        alpha=config["report"]["alpha"],
        adjust=config["report"]["adjust"],
    script:
        "../workflow/scripts/report.py"
