# Adapter stage: the general adapter (built once, shared) and one adapter per target domain.


# The base model as an HF folder, where it is built here (tiny-qwen2, an embedded model
# from its PyPI wheel, a .gguf file); hub ids and local folders are loaded as given.
if built_here(config["model"]["base"]):

    rule build_base_model:
        input:
            gguf=gguf_input,
        output:
            directory(BASE_MODEL),
        log:
            "logs/models/base.log",
        conda:
            "../envs/molorec.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=20,
        params:
            base=config["model"]["base"],
            tiny=config["model"]["tiny"] if config["model"]["base"] == TINY else {},
        script:
            "../workflow/scripts/build_base_model.py"


rule train_general_adapter:
    input:
        data="results/data/general/instructions.parquet",
        base=base_model_input,
    output:
        directory("results/adapters/general"),
    log:
        "logs/train/general.log",
    benchmark:
        "results/benchmarks/train/general.tsv"
    conda:
        "../envs/molorec.yaml"
    threads: stage_resource("train", "threads")
    resources:
        **stage_resources("train"),
    params:
        launch=launcher,
        base=BASE_MODEL,
        settings=lambda w: json.dumps(
            train_settings(config, "general", replicate_of(w))
        ),
        checkpoints=checkpoints_of("general"),
    shell:
        "{params.launch} -m molorec.train --base {params.base} --data {input.data}"
        " --kind general --out {output} --checkpoints {params.checkpoints}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule train_domain_adapter:
    input:
        data="results/data/{domain}/instructions.parquet",
        base=base_model_input,
    output:
        directory("results/adapters/{domain}"),
    log:
        "logs/train/{domain}.log",
    benchmark:
        "results/benchmarks/train/{domain}.tsv"
    wildcard_constraints:
        domain="|".join(TARGET_DOMAINS) or "^$",
    conda:
        "../envs/molorec.yaml"
    threads: stage_resource("train", "threads")
    resources:
        **stage_resources("train"),
    params:
        launch=launcher,
        base=BASE_MODEL,
        settings=lambda w: json.dumps(train_settings(config, "domain", replicate_of(w))),
        checkpoints=checkpoints_of("{domain}"),
    shell:
        "{params.launch} -m molorec.train --base {params.base} --data {input.data}"
        " --kind domain --out {output} --checkpoints {params.checkpoints}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


# Replicates (replicates: N): the same training with the replicate's seed.
use rule train_general_adapter as train_general_adapter_replicate with:
    output:
        directory(adapter_dir("general", REPLICATE_ROOT)),
    log:
        "logs/replicates/{replicate}/train/general.log",
    benchmark:
        "results/benchmarks/train/replicates/{replicate}/general.tsv"


use rule train_domain_adapter as train_domain_adapter_replicate with:
    output:
        directory(adapter_dir("{domain}", REPLICATE_ROOT)),
    log:
        "logs/replicates/{replicate}/train/{domain}.log",
    benchmark:
        "results/benchmarks/train/replicates/{replicate}/{domain}.tsv"
