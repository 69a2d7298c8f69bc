# Deactivation experiment. A domain's runs per selection method (every condition with the domain's own neurons;
# for DAPE also their random controls and other domains' neurons for the cross-domain matrix; for an external
# set each of its sets at its site; rules/common.smk)
# are answered by `ablation.groups` groups of jobs, each over `ablation.shards` shards of the samples
# (Snakemake's scatter `generation`; a shard is whole batches, so shards gather exactly): every job loads the
# model once for all the runs of its group. `mmneuron gather-answers` then writes one file per run and domain:
#
#   results/{model}/ablation/jobs/{method}/{domain}/group{g}.{i}-of-{n}.jsonl   one job's answers (the group's runs)
#   results/{model}/ablation/answers/{method}/{domain}/{condition}/{variant}.jsonl   one run's answers

ABLATION = config["ablation"]
EVALUATION = config["evaluation"]


# An external set (`selection.external`, LAPE's format) as a neurons file of the model's site: its layer count and
# width are checked against the model built from its config (no weights read). Beside results/{model}/neurons/,
# which is the selection's (and DVC's neurons stage's); imported here, in the ablation stage, which uses it.
rule import_neurons:
    input:
        sets=lambda wildcards: EXTERNAL[wildcards.label]["file"],
        model=model_files,
    output:
        "results/{model}/external/{label}.json",
    log:
        "logs/neurons/{model}.external_{label}.log",
    wildcard_constraints:
        label="|".join(EXTERNAL) or "no-label",
    conda:
        "../envs/mmneuron.yaml"
    params:
        model=model_option,
        site=lambda wildcards: option("--site", EXTERNAL[wildcards.label]["site"]),
        names=lambda wildcards: options("--names", EXTERNAL[wildcards.label]["names"]),
        trust_remote_code=model_trust_remote_code,
    shell:
        "python -m mmneuron import-neurons {input.sets} {params.model} --name {wildcards.model} {params.site}"
        " {params.names} --label {wildcards.label} {params.trust_remote_code} --out {output} > {log} 2>&1"


rule ablate:
    input:
        model=model_files,
        neurons=neurons_file,
        data="data/{domain}/eval.parquet",
        # every domain's statistics, only for a group with a run at the neurons' mean activation
        stats=ablation_statistics,
    output:
        "results/{model}/ablation/jobs/{method}/{domain}/group{group}.{scatteritem}.jsonl",
    log:
        "logs/ablation/{model}/{method}/{domain}/group{group}.{scatteritem}.log",
    benchmark:
        "logs/benchmarks/ablation/{model}/{method}/{domain}/group{group}.{scatteritem}.tsv"
    wildcard_constraints:
        method=r"[^/]+",
        domain=r"[^/]+",
        group=r"\d+",
    conda:
        "../envs/mmneuron.yaml"
    threads: ABLATION["threads"]
    resources:
        gpu=MODEL_GPUS,
    params:
        model=model_option,
        runs=lambda wildcards: options("--runs", group_runs(wildcards)),
        shard=lambda wildcards: "--shard {}/{}".format(*scatter_item(wildcards)),
        # this domain's template (or the default), through a function: Snakemake would read its braces as
        # wildcards; a change to another domain's template reruns only that domain's jobs
        prompt=lambda wildcards: option(
            "--prompt", EVALUATION["prompts"].get(wildcards.domain, EVALUATION["prompts"]["default"])
        ),
        chat=evaluation_chat,
        likelihood=switch("--likelihood", ABLATION["likelihood"]),
        batch_size=option("--batch-size", ABLATION["batch_size"]),
        max_new_tokens=option("--max-new-tokens", ABLATION["max_new_tokens"]),
        decoding=option("--decoding", ABLATION["decoding"]),
        temperature=option("--temperature", ABLATION["temperature"]),
        seed=option("--seed", config["seed"]),
        value=option("--value", ABLATION["value"]),
        stats=lambda wildcards, input: options("--stats", input.stats),
        device=DEVICE,
        dtype=model_dtype,
        device_map=model_device_map,
        attn_implementation=model_attn_implementation,
        trust_remote_code=model_trust_remote_code,
    shell:
        "python -m mmneuron ablate {params.model} --name {wildcards.model} --neurons {input.neurons}"
        " --data {input.data} {params.runs} {params.shard} --out {output}"
        " {params.prompt} {params.chat} {params.likelihood} {params.batch_size} {params.max_new_tokens}"
        " {params.decoding} {params.temperature} {params.seed} {params.value} {params.stats}"
        " {params.device} {params.dtype} {params.device_map} {params.attn_implementation} {params.trust_remote_code}"
        " --threads {threads} > {log} 2>&1"


rule ablation_answers:
    input:
        ablation_jobs,
    output:
        directory("results/{model}/ablation/answers/{method}/{domain}"),
    log:
        "logs/ablation/{model}/{method}/{domain}/gather.log",
    wildcard_constraints:
        method=r"[^/]+",
        domain=r"[^/]+",
    conda:
        "../envs/mmneuron.yaml"
    shell:
        "python -m mmneuron gather-answers {input} --out-dir {output} > {log} 2>&1"


rule score_ablation:
    input:
        # every selection method's answers and every external set's
        expand(
            "results/{{model}}/ablation/answers/{method}/{domain}",
            method=METHODS + EXTERNAL_METHODS,
            domain=DOMAINS,
        ),
    output:
        scores="results/{model}/ablation/scores.csv",
        random="results/{model}/ablation/scores_random.csv",
        figures=directory("results/{model}/ablation/figures"),
    log:
        "logs/ablation/{model}/score.log",
    conda:
        "../envs/mmneuron.yaml"
    params:
        # every configured domain needs a metric (a KeyError here names the one without)
        metrics=options("--metrics", [f"{domain}={EVALUATION['metrics'][domain]}" for domain in DOMAINS]),
        judge=option("--judge", EVALUATION["judge"]),
        breakdown=key_values("--breakdown", EVALUATION["breakdown"]),
        n_boot=option("--n-boot", ABLATION["n_boot"]),
        seed=option("--seed", config["seed"]),
    shell:
        "python -m mmneuron score {input} {params.metrics} {params.judge} {params.breakdown} --out {output.scores}"
        " --random-out {output.random} --figures {output.figures} {params.n_boot} {params.seed} > {log} 2>&1"
