# Deactivation experiment: answers per (model, condition, neuron set, domain), then one scoring job
# per model. Answers: results/{model}/ablation/answers/{condition}/{variant}/{domain}.jsonl, where
# the variant says whose neurons are deactivated: `own` (the evaluated domain's), `random{seed}`
# (the random control of the same size per site and layer) or `from_{source}` (another domain's,
# for the cross-domain matrix).

ABLATION = config["ablation"]
EVALUATION = config["evaluation"]


rule ablate:
    input:
        model=model_files,
        neurons="results/{model}/neurons.json",
        data="data/{domain}/eval.parquet",
    output:
        "results/{model}/ablation/answers/{condition}/{variant}/{domain}.jsonl",
    log:
        "logs/ablation/{model}/{condition}/{variant}/{domain}.log",
    wildcard_constraints:
        condition=r"[^/]+",
        variant=r"own|random\d+|from_[^/]+",
        domain=r"[^/]+",
    conda:
        "../envs/mmneuron.yaml"
    # Many small jobs: `ablation.threads` each (not MODEL_THREADS), so several run side by side.
    threads: ABLATION["threads"]
    resources:
        gpu=MODEL_GPUS,
    params:
        model=model_option,
        variant=ablation_variant_flags,
        # this domain's template (or the default), through a function: Snakemake would read its braces as
        # wildcards; a change to another domain's template reruns only that domain's jobs
        prompt=lambda wildcards: option(
            "--prompt", EVALUATION["prompts"].get(wildcards.domain, EVALUATION["prompts"]["default"])
        ),
        chat=switch("--chat", EVALUATION["chat"]),
        likelihood=switch("--likelihood", ABLATION["likelihood"]),
        batch_size=option("--batch-size", ABLATION["batch_size"]),
        max_new_tokens=option("--max-new-tokens", ABLATION["max_new_tokens"]),
        decoding=option("--decoding", ABLATION["decoding"]),
        temperature=option("--temperature", ABLATION["temperature"]),
        seed=option("--seed", config["seed"]),
        value=option("--value", ABLATION["value"]),
        device=DEVICE,
        dtype=DTYPE,
    shell:
        "python -m mmneuron ablate {params.model} --name {wildcards.model} --neurons {input.neurons}"
        " --data {input.data} --condition {wildcards.condition} {params.variant} --out {output}"
        " {params.prompt} {params.chat} {params.likelihood} {params.batch_size} {params.max_new_tokens}"
        " {params.decoding} {params.temperature} {params.seed} {params.value} {params.device} {params.dtype}"
        " --threads {threads} > {log} 2>&1"


rule score_ablation:
    input:
        ablation_answers,
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
