# Neuron selection (DAPE) per model, from every domain's counts; split-half stability from the
# halves' counts. Outputs beside neurons.json: the tidy table, statistics, LAPE exports, figures.

SELECTION = config["selection"]


rule select_neurons:
    input:
        counts=expand("results/{{model}}/counts/{domain}.safetensors", domain=DOMAINS),
        half_a=expand("results/{{model}}/counts/{domain}.halfa.safetensors", domain=DOMAINS),
        half_b=expand("results/{{model}}/counts/{domain}.halfb.safetensors", domain=DOMAINS),
    output:
        neurons="results/{model}/neurons.json",
        table="results/{model}/neurons.csv",
        stats="results/{model}/neuron_stats.csv",
        lape=directory("results/{model}/lape"),
        figures=directory("results/{model}/figures/neurons"),
    log:
        "logs/neurons/{model}.log",
    benchmark:
        "logs/benchmarks/neurons/{model}.tsv"
    conda:
        "../envs/mmneuron.yaml"
    params:
        top_rate=option("--top-rate", SELECTION["top_rate"]),
        filter_rate=option("--filter-rate", SELECTION["filter_rate"]),
        assign_rate=option("--assign-rate", SELECTION["assign_rate"]),
        scope=option("--scope", SELECTION["scope"]),
    shell:
        "python -m mmneuron select --counts {input.counts} --half-a {input.half_a} --half-b {input.half_b}"
        " --out {output.neurons} --table {output.table} --stats {output.stats} --lape-dir {output.lape}"
        " --figures {output.figures} {params.top_rate} {params.filter_rate} {params.assign_rate} {params.scope}"
        " > {log} 2>&1"


# The selector bake-off: every other method of `selection.methods` over the same counts (docs/selectors.md),
# with `selection.match_sizes` as many neurons per site and domain as DAPE; their overlaps with each other (no
# pairs with DAPE alone); and the sample-count curve (the selection on 1, 2, 4, ... merged extraction shards
# against all of them). Everything under results/{model}/neurons/ (DVC's neurons stage tracks the folder).
rule select_method:
    input:
        counts=expand("results/{{model}}/counts/{domain}.safetensors", domain=DOMAINS),
        half_a=expand("results/{{model}}/counts/{domain}.halfa.safetensors", domain=DOMAINS),
        half_b=expand("results/{{model}}/counts/{domain}.halfb.safetensors", domain=DOMAINS),
    output:
        neurons="results/{model}/neurons/{method}.json",
        table="results/{model}/neurons/{method}.csv",
        stats="results/{model}/neurons/{method}_stats.csv",
        lape=directory("results/{model}/neurons/{method}_lape"),
        figures=directory("results/{model}/neurons/{method}_figures"),
    log:
        "logs/neurons/{model}.{method}.log",
    benchmark:
        "logs/benchmarks/neurons/{model}.{method}.tsv"
    wildcard_constraints:
        method="|".join(OTHER_METHODS) or "no-method",
    conda:
        "../envs/mmneuron.yaml"
    params:
        method=lambda wildcards: option("--method", wildcards.method),
        top_rate=option("--top-rate", SELECTION["top_rate"]),
        filter_rate=option("--filter-rate", SELECTION["filter_rate"]),
        assign_rate=option("--assign-rate", SELECTION["assign_rate"]),
        scope=option("--scope", SELECTION["scope"]),
        match=switch("--match-sizes", SELECTION["match_sizes"]),
        weights=lambda wildcards: miner_weights([wildcards.method]),
        seed=lambda wildcards: random_seed([wildcards.method]),
    shell:
        "python -m mmneuron select {params.method} --counts {input.counts} --half-a {input.half_a}"
        " --half-b {input.half_b} --out {output.neurons} --table {output.table} --stats {output.stats}"
        " --lape-dir {output.lape} --figures {output.figures} {params.top_rate} {params.filter_rate}"
        " {params.assign_rate} {params.scope} {params.match} {params.weights} {params.seed} > {log} 2>&1"


rule method_overlaps:
    input:
        lambda wildcards: [neurons_path(wildcards.model, method) for method in METHODS],
    output:
        table="results/{model}/neurons/method_overlaps.csv",
        figure=multiext("results/{model}/neurons/method_overlaps", ".png", ".pdf"),
    log:
        "logs/neurons/{model}.method_overlaps.log",
    conda:
        "../envs/mmneuron.yaml"
    params:
        neurons=lambda wildcards: options(
            "--neurons", [f"{method}={neurons_path(wildcards.model, method)}" for method in METHODS]
        ),
        figure=lambda wildcards, output: option("--figure", output.figure[0].removesuffix(".png")),
    shell:
        "python -m mmneuron compare-methods {params.neurons} --out {output.table} {params.figure} > {log} 2>&1"


rule sample_curve:
    input:
        extraction_shards,
    output:
        table="results/{model}/neurons/sample_curve.csv",
        figure=multiext("results/{model}/neurons/sample_curve", ".png", ".pdf"),
    log:
        "logs/neurons/{model}.sample_curve.log",
    conda:
        "../envs/mmneuron.yaml"
    params:
        methods=options("--methods", METHODS),
        shards=option("--max-shards", SELECTION["curve_shards"]) if SELECTION["curve_shards"] else "",
        top_rate=option("--top-rate", SELECTION["top_rate"]),
        filter_rate=option("--filter-rate", SELECTION["filter_rate"]),
        assign_rate=option("--assign-rate", SELECTION["assign_rate"]),
        scope=option("--scope", SELECTION["scope"]),
        match=switch("--match-sizes", SELECTION["match_sizes"]),
        weights=miner_weights(METHODS),
        seed=random_seed(METHODS),
        figure=lambda wildcards, output: option("--figure", output.figure[0].removesuffix(".png")),
    shell:
        "python -m mmneuron sample-curve --shards {input} {params.methods} {params.shards} {params.top_rate}"
        " {params.filter_rate} {params.assign_rate} {params.scope} {params.match} {params.weights} {params.seed}"
        " --out {output.table} {params.figure} > {log} 2>&1"
