# Prepared datasets: data/{domain}/{split}.parquet in the sample format of the README.


rule synthetic_domain:
    output:
        expand("data/{{domain}}/{split}.parquet", split=["train", "stats", "eval"]),
    log:
        "logs/data/synthetic_{domain}.log",
    conda:
        "../envs/mmneuron.yaml"
    params:
        sizes=options("--sizes", [f"{split}={n}" for split, n in config["data"]["sizes"].items()]),
        image_size=option("--image-size", config["data"]["image_size"]),
        seed=option("--seed", config["seed"]),
    shell:
        "python -m mmneuron make-data --domain {wildcards.domain} {params.sizes} {params.image_size} {params.seed}"
        " --out-dir data > {log} 2>&1"


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
