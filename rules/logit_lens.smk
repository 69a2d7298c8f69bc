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
    benchmark:
        "logs/benchmarks/logit_lens/{model}.tsv"
    conda:
        "../envs/mmneuron.yaml"
    # (`mmneuron lens` has no --threads: torch takes its own choice within the threads reserved here.)
    threads: MODEL_THREADS
    resources:
        gpu=MODEL_GPUS,
    params:
        model=model_option,
        samples=option("--limit", LENS["samples"]),
        batch_size=option("--batch-size", LENS["batch_size"]),
        chunk_size=option("--chunk-size", LENS["chunk_size"]),
        # a function: Snakemake would read the template's braces as wildcards
        prompt=lambda wildcards: option("--prompt", LENS["prompt"]),
        chat=switch("--chat", LENS["chat"]),
        start_fraction=option("--start-fraction", LENS["stages"]["start_fraction"]),
        min_rise=option("--min-rise", LENS["stages"]["min_rise"]),
        flat_tolerance=option("--flat-tolerance", LENS["stages"]["flat_tolerance"]),
        device=DEVICE,
        dtype=model_dtype,
        device_map=model_device_map,
        attn_implementation=model_attn_implementation,
        trust_remote_code=model_trust_remote_code,
    shell:
        "python -m mmneuron lens {params.model} --name {wildcards.model} --data {input.data}"
        " --out {output.table} --stages {output.stages} --examples {output.examples} --figures {output.figures}"
        " {params.samples} {params.batch_size} {params.chunk_size} {params.prompt} {params.chat}"
        " {params.start_fraction} {params.min_rise} {params.flat_tolerance}"
        " {params.device} {params.dtype} {params.device_map} {params.attn_implementation} {params.trust_remote_code}"
        " > {log} 2>&1"
