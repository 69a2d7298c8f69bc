# The reproduction report: every figure and table of the analysis, the paper's claims as verdicts computed from
# the tables, the configuration (its digest), samples, skips and package versions. The resolved config is
# one param, so any config change rewrites the report. The data's contact sheet is left out: with it as an
# input, DVC's report stage in a fresh clone (data/ pulled newer than the sheet) rewrote the sheet's time.
import json


rule report:
    input:
        expand("results/{model}/neurons.json", model=MODELS),
        expand("results/{model}/neurons/method_overlaps.csv", model=MODELS),
        expand("results/{model}/neurons/sample_curve.csv", model=MODELS),
        expand("results/{model}/lens/lens.csv", model=MODELS),
        expand("results/{model}/ablation/scores.csv", model=MODELS),
        expand("results/{model}/perturbation/perturbation.csv", model=MODELS),
    output:
        html="results/report.html",
        markdown="results/report.md",
    log:
        "logs/report.log",
    conda:
        "../envs/mmneuron.yaml"
    params:
        models=options("--models", MODELS),
        # a function: the prompts' braces would read as wildcards
        config=lambda wildcards: option("--config-json", json.dumps(config, sort_keys=True)),
    shell:
        "python -m mmneuron report --results results {params.models} {params.config}"
        " --markdown {output.markdown} --html {output.html} > {log} 2>&1"
