# Activation statistics: counts of active positions per neuron, per (model, domain), from the
# statistics split. The samples (the first `extraction.samples` of data/{domain}/stats.parquet, or
# all) are cut into two contiguous halves, a and b, for the stability analysis; each half is
# counted in `extraction.shards` jobs (`mmneuron extract --shard i/n`: shards 1..S of 2S are half a,
# S+1..2S half b) merged with `mmneuron merge`. The whole domain's counts are the merge of its
# halves: counts add up exactly, so nothing is counted twice.
#
#   results/{model}/counts/{domain}.safetensors             the whole domain
#   results/{model}/counts/{domain}.half{a,b}.safetensors   the halves
#   results/{model}/counts/shards/{domain}.half{h}.{i}.safetensors   (only when shards > 1)

EXTRACTION = config["extraction"]
EXTRACTION_SHARDS = EXTRACTION["shards"]
HALF_INDEX = {"a": 1, "b": 2}


def extraction_shard(wildcards):
    """This job's shard of the domain's samples, as `mmneuron extract --shard` takes it."""
    half = HALF_INDEX[wildcards.half]
    index = (half - 1) * EXTRACTION_SHARDS + int(wildcards.get("shard", 1))
    return f"{index}/{2 * EXTRACTION_SHARDS}"


EXTRACT = (
    MMNEURON + " extract --model {params.model:q} --name {wildcards.model} --data {input.data}"
    " --out {output} --shard {params.shard} --batch-size {params.settings[batch_size]}"
    " --prompt {params.settings[prompt]:q} --max-bad-share {params.settings[max_bad_share]}"
    " --device {config[device]} --dtype {params.settings[dtype]} --threads {threads}"
    " {params.limit} {params.sites} > {log} 2>&1"
)
EXTRACT_PARAMS = dict(
    model=model_path,
    shard=extraction_shard,
    settings=EXTRACTION,
    limit="" if EXTRACTION["samples"] is None else f"--limit {EXTRACTION['samples']}",
    sites="" if not EXTRACTION["sites"] else "--sites " + " ".join(EXTRACTION["sites"]),
)


if EXTRACTION_SHARDS == 1:

    rule activation_counts_half:
        input:
            model=model_files,
            data="data/{domain}/stats.parquet",
        output:
            "results/{model}/counts/{domain}.half{half}.safetensors",
        log:
            "logs/activations/{model}/{domain}.half{half}.log",
        wildcard_constraints:
            half="a|b",
        conda:
            "../envs/mmneuron.yaml"
        threads: workflow.cores if config["device"] == "cpu" else 2
        resources:
            gpu=0 if config["device"] == "cpu" else 1,
        params:
            **EXTRACT_PARAMS,
        shell:
            EXTRACT

else:

    rule activation_counts_shard:
        input:
            model=model_files,
            data="data/{domain}/stats.parquet",
        output:
            "results/{model}/counts/shards/{domain}.half{half}.{shard}.safetensors",
        log:
            "logs/activations/{model}/{domain}.half{half}.{shard}.log",
        wildcard_constraints:
            half="a|b",
            shard=r"\d+",
        conda:
            "../envs/mmneuron.yaml"
        threads: workflow.cores if config["device"] == "cpu" else 2
        resources:
            gpu=0 if config["device"] == "cpu" else 1,
        params:
            **EXTRACT_PARAMS,
        shell:
            EXTRACT

    rule activation_counts_half:
        input:
            expand(
                "results/{{model}}/counts/shards/{{domain}}.half{{half}}.{shard}.safetensors",
                shard=range(1, EXTRACTION_SHARDS + 1),
            ),
        output:
            "results/{model}/counts/{domain}.half{half}.safetensors",
        log:
            "logs/activations/{model}/{domain}.half{half}.merge.log",
        wildcard_constraints:
            half="a|b",
        conda:
            "../envs/mmneuron.yaml"
        shell:
            MMNEURON + " merge {input} --out {output} > {log} 2>&1"


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
        MMNEURON + " merge {input} --out {output} > {log} 2>&1"
