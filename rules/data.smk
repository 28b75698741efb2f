# Data stage: raw dumps -> interactions -> examples -> instruction sets.


rule ingest_domain:
    input:
        raw_inputs,
    output:
        interactions="results/data/{domain}/interactions.parquet",
        catalog="results/data/{domain}/items.parquet",
        quality="results/data/{domain}/quality.json",
    log:
        "logs/data/{domain}/ingest.log",
    benchmark:
        "results/benchmarks/data/{domain}/ingest.tsv"
    conda:
        "../envs/data.yaml"
    threads: stage_resource("data", "threads")
    resources:
        mem_mb=input_mb,
        runtime=60,
    params:
        spec=ingest_params,
        data=ingest_settings(config),
    script:
        "../workflow/scripts/ingest_domain.py"


rule build_examples:
    input:
        unpack(examples_inputs),
    output:
        examples="results/data/{domain}/examples.parquet",
        summary="results/data/{domain}/examples.json",
    log:
        "logs/data/{domain}/examples.log",
    benchmark:
        "results/benchmarks/data/{domain}/examples.tsv"
    conda:
        "../envs/data.yaml"
    threads: stage_resource("data", "threads")
    resources:
        mem_mb=input_mb,
        runtime=60,
    params:
        settings=examples_params,
    script:
        "../workflow/scripts/build_examples.py"


rule build_instructions:
    input:
        examples="results/data/{domain}/examples.parquet",
        catalog="results/data/{domain}/items.parquet",
    output:
        "results/data/{domain}/instructions.parquet",
    log:
        "logs/data/{domain}/instructions.log",
    benchmark:
        "results/benchmarks/data/{domain}/instructions.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=input_mb,
        runtime=60,
    params:
        instruction_params,
    script:
        "../workflow/scripts/build_instructions.py"


rule pool_general_instructions:
    input:
        instructions=expand(
            "results/data/{domain}/instructions.parquet", domain=GENERAL_DOMAINS
        ),
        examples=expand(
            "results/data/{domain}/examples.parquet", domain=GENERAL_DOMAINS
        ),
    output:
        instructions="results/data/general/instructions.parquet",
        pairs=POOLED_PAIRS,
    log:
        "logs/data/general/pool.log",
    benchmark:
        "results/benchmarks/data/general/pool.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=input_mb,
        runtime=30,
    script:
        "../workflow/scripts/pool_general_instructions.py"
