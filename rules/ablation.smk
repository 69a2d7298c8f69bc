# Deactivation experiment: answers per (model, condition, neuron set, domain), then one scoring job
# per model. Answers: results/{model}/ablation/answers/{condition}/{variant}/{domain}.jsonl, where
# the variant says whose neurons are deactivated: `own` (the evaluated domain's), `random{seed}`
# (the random control of the same size per site and layer) or `from_{source}` (another domain's,
# for the cross-domain matrix).

ABLATION = config["ablation"]
EVALUATION = config["evaluation"]


def ablation_answers(wildcards):
    """Every answers file the scoring of one model needs."""
    stem = f"results/{wildcards.model}/ablation/answers"
    files = []
    for condition in ABLATION["conditions"]:
        variants = ["own"]
        if condition != "none":
            variants += [f"random{seed}" for seed in ABLATION["random_seeds"]]
        files += expand(f"{stem}/{condition}/{{variant}}/{{domain}}.jsonl", variant=variants, domain=DOMAINS)
    for condition in ABLATION["cross_domain"]:
        files += [
            f"{stem}/{condition}/from_{source}/{domain}.jsonl"
            for source in DOMAINS
            for domain in DOMAINS
            if source != domain
        ]
    return files


def ablation_variant_flags(wildcards):
    variant = wildcards.variant
    if variant.startswith("random"):
        return f"--random-seed {variant[len('random'):]}"
    if variant.startswith("from_"):
        return f"--source-domain {variant[len('from_'):]}"
    return ""


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
    threads: ABLATION["threads"]
    resources:
        gpu=0 if config["device"] == "cpu" else 1,
    params:
        model=model_path,
        flags=ablation_variant_flags,
        prompt=lambda wildcards: EVALUATION["prompts"].get(wildcards.domain, EVALUATION["prompts"]["default"]),
        chat="--chat" if EVALUATION["chat"] else "",
        likelihood="" if ABLATION["likelihood"] else "--no-likelihood",
        settings=ABLATION,
    shell:
        MMNEURON + " ablate --model {params.model:q} --neurons {input.neurons} --data {input.data}"
        " --condition {wildcards.condition} {params.flags} --out {output} --prompt {params.prompt:q}"
        " {params.chat} {params.likelihood} --batch-size {params.settings[batch_size]}"
        " --max-new-tokens {params.settings[max_new_tokens]} --decoding {params.settings[decoding]}"
        " --temperature {params.settings[temperature]} --seed {config[seed]} --value {params.settings[value]}"
        " --device {config[device]} --threads {threads} --name {wildcards.model} > {log} 2>&1"


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
        metrics=" ".join(f"{domain}={EVALUATION['metrics'][domain]}" for domain in DOMAINS),
        judge=f"--judge {EVALUATION['judge']}" if EVALUATION.get("judge") else "",
        n_boot=ABLATION["n_boot"],
    shell:
        MMNEURON + " score {input} --metrics {params.metrics} {params.judge} --out {output.scores}"
        " --random-out {output.random} --figures {output.figures} --n-boot {params.n_boot}"
        " --seed {config[seed]} > {log} 2>&1"
