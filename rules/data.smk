# Prepared datasets: data/{domain}/{split}.parquet in the sample format of the README.


rule synthetic_domain:
    output:
        expand("data/{{domain}}/{split}.parquet", split=["train", "stats", "eval"]),
    log:
        "logs/data/synthetic_{domain}.log",
    conda:
        "../envs/mmneuron.yaml"
    params:
        sizes=lambda wildcards: " ".join(f"{s}={n}" for s, n in config["data"]["sizes"].items()),
    shell:
        MMNEURON + " make-data --domain {wildcards.domain} --sizes {params.sizes}"
        " --image-size {config[data][image_size]} --seed {config[seed]} --out-dir data > {log} 2>&1"


rule contact_sheet:
    input:
        expand("data/{domain}/eval.parquet", domain=DOMAINS),
    output:
        "results/data/contact_sheet.png",
    log:
        "logs/data/contact_sheet.log",
    conda:
        "../envs/mmneuron.yaml"
    shell:
        MMNEURON + " contact-sheet {input} --per-domain {config[data][contact_sheet_per_domain]}"
        " --out {output} > {log} 2>&1"
