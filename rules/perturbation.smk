# Hidden-state perturbation under deactivation, one job per model: for every condition (each
# domain's own neurons, and their random controls) and domain, per LLM layer, the cosine similarity
# and relative L2 distance between the ablated and the clean residual stream. One clean forward per
# batch serves every condition. Inputs: the evaluation split with the evaluation prompts (what the
# ablation answers), or the statistics split with the lens' prompt (`perturbation.split`).

PERTURBATION = config["perturbation"]


rule perturbation:
    input:
        model=model_files,
        neurons="results/{model}/neurons.json",
        data=expand("data/{domain}/{split}.parquet", domain=DOMAINS, split=PERTURBATION["split"]),
        stats=perturbation_statistics,
    output:
        table="results/{model}/perturbation/perturbation.csv",
        summary="results/{model}/perturbation/summary.json",
        figures=directory("results/{model}/perturbation/figures"),
    log:
        "logs/perturbation/{model}.log",
    benchmark:
        "logs/benchmarks/perturbation/{model}.tsv"
    conda:
        "../envs/mmneuron.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=MODEL_GPUS,
    params:
        model=model_option,
        # perturbation.conditions and .random_seeds, or the ablation's where null
        conditions=perturbation_conditions,
        seeds=options("--random-seeds", PERTURBATION_SEEDS),
        samples=option("--limit", PERTURBATION["samples"]),
        batch_size=option("--batch-size", PERTURBATION["batch_size"]),
        # the split's prompts and chat setting (evaluation.* or lens.*); functions: Snakemake would read the
        # templates' braces as wildcards
        prompt=lambda wildcards: option("--prompt", PERTURBATION_PROMPTS["default"]),
        prompts=lambda wildcards: key_values("--prompts", PERTURBATION_PROMPTS),
        chat=perturbation_chat,
        value=option("--value", config["ablation"]["value"]),
        stats=lambda wildcards, input: options("--stats", input.stats),
        device=DEVICE,
        dtype=model_dtype,
        device_map=model_device_map,
        attn_implementation=model_attn_implementation,
        trust_remote_code=model_trust_remote_code,
    shell:
        "python -m mmneuron perturb {params.model} --name {wildcards.model} --neurons {input.neurons}"
        " --data {input.data} {params.conditions} {params.seeds} --out {output.table} --summary {output.summary}"
        " --figures {output.figures} {params.samples} {params.batch_size} {params.prompt} {params.prompts}"
        " {params.chat} {params.value} {params.stats}"
        " {params.device} {params.dtype} {params.device_map} {params.attn_implementation} {params.trust_remote_code}"
        " --threads {threads} > {log} 2>&1"
