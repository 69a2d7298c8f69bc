# Prepared datasets: data/{domain}/{split}.parquet in the sample format of the README.


# A domain without an entry in data.sources is synthetic (train, stats and eval); one with an entry is drawn
# from its dataset source by `mmneuron prepare`, one job per split (stats and eval).


rule synthetic_domain:
    output:
        expand("data/{{domain}}/{split}.parquet", split=["train", "stats", "eval"]),
    log:
        "logs/data/synthetic_{domain}.log",
    wildcard_constraints:
        domain=domain_pattern(SYNTHETIC),
    conda:
        "../envs/mmneuron.yaml"
    params:
        sizes=options("--sizes", [f"{split}={n}" for split, n in config["data"]["sizes"].items()]),
        image_size=option("--image-size", config["data"]["image_size"]),
        seed=option("--seed", config["seed"]),
    shell:
        "python -m mmneuron make-data --domain {wildcards.domain} {params.sizes} {params.image_size} {params.seed}"
        " --out-dir data > {log} 2>&1"


rule prepare_domain:
    output:
        "data/{domain}/{split}.parquet",
    log:
        "logs/data/prepare_{domain}_{split}.log",
    wildcard_constraints:
        domain=domain_pattern(SOURCES),
        split="stats|eval",
    conda:
        "../envs/mmneuron.yaml"
    params:
        source=lambda wildcards: option("prepare", SOURCES[wildcards.domain]["source"]),
        n=lambda wildcards: option("--n", source_size(wildcards)),
        seed=option("--seed", config["seed"]),
        max_bad_share=option("--max-bad-share", config["extraction"]["max_bad_share"]),
        # one param for all of a source's options: their names vary by source (the whole string is compared)
        options=source_options,
    shell:
        "python -m mmneuron {params.source} --split {wildcards.split} --domain {wildcards.domain} {params.n}"
        " {params.seed} {params.max_bad_share} {params.options} --out {output} > {log} 2>&1"


rule contact_sheet:
    input:
        expand("data/{domain}/eval.parquet", domain=DOMAINS),
    output:
        "results/data/contact_sheet.png",
    log:
        "logs/data/contact_sheet.log",
    conda:
        "../envs/mmneuron.yaml"
    params:
        per_domain=option("--per-domain", config["data"]["contact_sheet_per_domain"]),
    shell:
        "python -m mmneuron contact-sheet {input} {params.per_domain} --out {output} > {log} 2>&1"
