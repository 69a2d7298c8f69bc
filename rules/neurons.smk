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
