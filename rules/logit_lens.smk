# Logit lens per model over every domain's statistics samples: one tidy table, the stage boundaries
# per domain, per-sample examples of top decoded tokens, and figures.

LENS = config["lens"]


rule logit_lens:
    input:
        model=model_files,
        data=expand("data/{domain}/stats.parquet", domain=DOMAINS),
    output:
        table="results/{model}/lens/lens.csv",
        stages="results/{model}/lens/stages.csv",
        examples="results/{model}/lens/examples.json",
        figures=directory("results/{model}/lens/figures"),
    log:
        "logs/logit_lens/{model}.log",
    conda:
        "../envs/mmneuron.yaml"
    threads: workflow.cores if config["device"] == "cpu" else 2
    resources:
        gpu=0 if config["device"] == "cpu" else 1,
    params:
        model=model_path,
        settings=LENS,
        chat="--chat" if LENS["chat"] else "",
    shell:
        MMNEURON + " lens --model {params.model:q} --name {wildcards.model} --data {input.data}"
        " --out {output.table} --stages {output.stages} --examples {output.examples}"
        " --figures {output.figures} --limit {params.settings[samples]}"
        " --batch-size {params.settings[batch_size]} --chunk-size {params.settings[chunk_size]}"
        " --prompt {params.settings[prompt]:q} {params.chat} --device {config[device]}"
        " --start-fraction {params.settings[stages][start_fraction]}"
        " --min-rise {params.settings[stages][min_rise]}"
        " --flat-tolerance {params.settings[stages][flat_tolerance]} > {log} 2>&1"
