# Activation statistics: counts of active positions per neuron, per (model, domain), from the
# statistics split. The samples (the first `extraction.samples` of data/{domain}/stats.parquet, or
# all) are cut into two contiguous halves, a and b, for the stability analysis; each half is
# counted in `extraction.shards` jobs (Snakemake's scatter `extraction`: `mmneuron extract --shard
# i/N`, shards 1..n of 2n are half a, n+1..2n half b) gathered with `mmneuron merge`. The whole
# domain's counts are the merge of its halves: counts add up exactly, so nothing is counted twice.
#
#   results/{model}/counts/{domain}.safetensors             the whole domain
#   results/{model}/counts/{domain}.half{a,b}.safetensors   the halves
#   results/{model}/counts/shards/{domain}.half{h}.{i}-of-{n}.safetensors   the shards

EXTRACTION = config["extraction"]


rule activation_counts_shard:
    input:
        model=model_files,
        data="data/{domain}/stats.parquet",
    output:
        "results/{model}/counts/shards/{domain}.half{half}.{scatteritem}.safetensors",
    log:
        "logs/activations/{model}/{domain}.half{half}.{scatteritem}.log",
    benchmark:
        "logs/benchmarks/activations/{model}/{domain}.half{half}.{scatteritem}.tsv"
    wildcard_constraints:
        half="a|b",
    conda:
        "../envs/mmneuron.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=MODEL_GPUS,
    params:
        model=model_option,
        shard=extraction_shard,
        samples=option("--limit", EXTRACTION["samples"]) if EXTRACTION["samples"] is not None else "",
        sites=options("--sites", EXTRACTION["sites"]),
        batch_size=option("--batch-size", EXTRACTION["batch_size"]),
        # a function: Snakemake would read the template's braces as wildcards
        prompt=lambda wildcards: option("--prompt", EXTRACTION["prompt"]),
        max_bad_share=option("--max-bad-share", EXTRACTION["max_bad_share"]),
        anyres_padding=option("--anyres-padding", EXTRACTION["anyres_padding"]),
        device=DEVICE,
        dtype=model_dtype,
        device_map=model_device_map,
        attn_implementation=model_attn_implementation,
        trust_remote_code=model_trust_remote_code,
    shell:
        "python -m mmneuron extract {params.model} --name {wildcards.model} --data {input.data} --out {output}"
        " {params.shard} {params.samples} {params.sites} {params.batch_size} {params.prompt} {params.max_bad_share}"
        " {params.anyres_padding}"
        " {params.device} {params.dtype} {params.device_map} {params.attn_implementation} {params.trust_remote_code}"
        " --threads {threads} > {log} 2>&1"


rule activation_counts_half:
    input:
        gather.extraction("results/{{model}}/counts/shards/{{domain}}.half{{half}}.{scatteritem}.safetensors"),
    output:
        "results/{model}/counts/{domain}.half{half}.safetensors",
    log:
        "logs/activations/{model}/{domain}.half{half}.merge.log",
    wildcard_constraints:
        half="a|b",
    conda:
        "../envs/mmneuron.yaml"
    shell:
        "python -m mmneuron merge {input} --out {output} > {log} 2>&1"


rule activation_counts:
    input:
        expand("results/{{model}}/counts/{{domain}}.half{half}.safetensors", half=HALF_INDEX),
    output:
        "results/{model}/counts/{domain}.safetensors",
    log:
        "logs/activations/{model}/{domain}.merge.log",
    wildcard_constraints:
        domain=r"[^/.]+",
    conda:
        "../envs/mmneuron.yaml"
    shell:
        "python -m mmneuron merge {input} --out {output} > {log} 2>&1"
