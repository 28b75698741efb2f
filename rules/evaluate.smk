# Evaluation stage: every variant on the same candidates, selection on validation, report.


# One job, and one load of the base model, per (domain, scenario, split): every LLM
# variant of it in turn (molorec.plan.run_variants), each in its own folder.
rule evaluate_llm:
    input:
        unpack(eval_inputs),
    output:
        directory(eval_dir("{domain}", "{scenario}", "{split}")),
    log:
        "logs/eval/{domain}/{scenario}/{split}.log",
    benchmark:
        "results/benchmarks/eval/{domain}/{scenario}/{split}.tsv"
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
    conda:
        "../envs/molorec.yaml"
    threads: stage_resource("evaluate", "threads")
    resources:
        **stage_resources("evaluate"),
    params:
        base=BASE_MODEL,
        settings=eval_settings(config),
        prompt=instruction_params,
        split=lambda w: w.split,
        jobs=eval_jobs,
    script:
        "../workflow/scripts/evaluate_llm.py"


rule select_molorec:
    input:
        unpack(select_inputs),
    output:
        **order_check_outputs(SELECTED_DIR),
        predictions=f"{SELECTED_DIR}/predictions.parquet",
        metrics=f"{SELECTED_DIR}/metrics.json",
        selection=f"{SELECTED_DIR}/selection.json",
    log:
        "logs/eval/{domain}/{scenario}/molorec.log",
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        points=lambda w: lr_variants(config, w.scenario),
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
            predictions=baseline_outputs("predictions.parquet"),
            metrics=baseline_outputs("metrics.json"),
        log:
            "logs/eval/{domain}/{scenario}/baselines.log",
        benchmark:
            "results/benchmarks/eval/{domain}/{scenario}/baselines.tsv"
        wildcard_constraints:
            domain="|".join(TARGET_DOMAINS) or "^$",
            scenario="warm|cold",
        # The model env: sasrec runs on torch, content on scikit-learn.
        conda:
            "../envs/molorec.yaml"
        threads: 1
        resources:
            mem_mb=stage_resource("evaluate", "mem_mb"),
            runtime=stage_resource("evaluate", "runtime"),
        params:
            baselines=config["evaluate"]["baselines"],
            settings=eval_settings(config),
            example_settings=cold_item_params,
        script:
            "../workflow/scripts/evaluate_baselines.py"


rule report:
    input:
        unpack(report_inputs),
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
        mixing="results/report/mixing.csv",
        replicates="results/report/replicates.csv",
        plots=report(
            directory("results/report/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Plots",
        ),
    log:
        "logs/report.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        domains=TARGET_DOMAINS,
        scenarios=SCENARIOS,
        variants=report_variants(config),
        adapters=(["general"] if TRAIN_GENERAL else []) + TARGET_DOMAINS,
        seed=config["seed"],
        bootstrap=config["evaluate"]["bootstrap"],
        alpha=config["report"]["alpha"],
        adjust=config["report"]["adjust"],
        replicates=REPLICATES,
        shared=shared_variants(config),
    script:
        "../workflow/scripts/report.py"


# A grid variant (merges.methods, controls) on the selection set: every point of its grid
# from one load of the base model, on the very examples and candidates of evaluate_llm.
use rule evaluate_llm as evaluate_grid with:
    input:
        unpack(grid_eval_inputs),
    output:
        directory(grid_eval_dir("{domain}", "{scenario}", "{grid}", "{split}")),
    log:
        "logs/eval/{domain}/{scenario}/{grid}/{split}.log",
    benchmark:
        "results/benchmarks/eval/{domain}/{scenario}/{grid}/{split}.tsv"
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
        grid="|".join(GRID_VARIANTS) or "^$",
        split="val",
    params:
        base=BASE_MODEL,
        settings=eval_settings(config),
        prompt=instruction_params,
        split="val",
        jobs=grid_eval_jobs,


# The point of a grid variant best on the selection set, as select_molorec chooses an lr;
# only that point is evaluated on test (evaluate_selected).
use rule select_molorec as select_grid with:
    input:
        val=grid_select_input,
    output:
        selection=f"{GRID_SELECTED_DIR}/selection.json",
    log:
        "logs/eval/{domain}/{scenario}/{grid}/select.log",
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
        grid="|".join(GRID_VARIANTS) or "^$",
    params:
        points=lambda w: grid_points(config, w.grid, w.scenario),


# The chosen point of a grid variant on the test examples of every other variant.
use rule evaluate_llm as evaluate_selected with:
    input:
        unpack(selected_eval_inputs),
    output:
        **order_check_outputs(GRID_SELECTED_DIR),
        predictions=f"{GRID_SELECTED_DIR}/predictions.parquet",
        metrics=f"{GRID_SELECTED_DIR}/metrics.json",
    log:
        "logs/eval/{domain}/{scenario}/{grid}/test.log",
    benchmark:
        "results/benchmarks/eval/{domain}/{scenario}/{grid}/test.tsv"
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
        grid="|".join(GRID_VARIANTS) or "^$",
    params:
        base=BASE_MODEL,
        settings=eval_settings(config),
        prompt=instruction_params,
        split="test",
        jobs=selected_eval_jobs,


# Replicates: every evaluation and selection of the replicate's adapters, on the same
# examples and candidates (the baselines are the same in every replicate: not repeated).
use rule evaluate_llm as evaluate_llm_replicate with:
    output:
        directory(eval_dir("{domain}", "{scenario}", "{split}", REPLICATE_ROOT)),
    log:
        "logs/replicates/{replicate}/eval/{domain}/{scenario}/{split}.log",
    benchmark:
        "results/benchmarks/eval/replicates/{replicate}/{domain}/{scenario}/{split}.tsv"


use rule select_molorec as select_molorec_replicate with:
    output:
        **order_check_outputs(REPLICATE_SELECTED_DIR),
        predictions=f"{REPLICATE_SELECTED_DIR}/predictions.parquet",
        metrics=f"{REPLICATE_SELECTED_DIR}/metrics.json",
        selection=f"{REPLICATE_SELECTED_DIR}/selection.json",
    log:
        "logs/replicates/{replicate}/eval/{domain}/{scenario}/molorec.log",


use rule evaluate_grid as evaluate_grid_replicate with:
    output:
        directory(
            grid_eval_dir(
                "{domain}", "{scenario}", "{grid}", "{split}", REPLICATE_ROOT
            )
        ),
    log:
        "logs/replicates/{replicate}/eval/{domain}/{scenario}/{grid}/{split}.log",
    benchmark:
        "results/benchmarks/eval/replicates/{replicate}/{domain}/{scenario}/{grid}/{split}.tsv"


use rule select_grid as select_grid_replicate with:
    output:
        selection=f"{REPLICATE_GRID_DIR}/selection.json",
    log:
        "logs/replicates/{replicate}/eval/{domain}/{scenario}/{grid}/select.log",


use rule evaluate_selected as evaluate_selected_replicate with:
    output:
        **order_check_outputs(REPLICATE_GRID_DIR),
        predictions=f"{REPLICATE_GRID_DIR}/predictions.parquet",
        metrics=f"{REPLICATE_GRID_DIR}/metrics.json",
    log:
        "logs/replicates/{replicate}/eval/{domain}/{scenario}/{grid}/test.log",
    benchmark:
        "results/benchmarks/eval/replicates/{replicate}/{domain}/{scenario}/{grid}/test.tsv"
