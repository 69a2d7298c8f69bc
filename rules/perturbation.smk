# Hidden-state perturbation under deactivation, one job per model: for every condition (each
# domain's own neurons, and their random controls) and domain, per LLM layer, the cosine similarity
# and relative L2 distance between the ablated and the clean residual stream. One clean forward per
# batch serves every condition. Inputs: the evaluation split with the evaluation prompts (what the
# ablation answers), or the statistics split with the lens' prompt (`perturbation.split`).
import shlex

PERTURBATION = config["perturbation"]
# null = the ablation's; an empty list of seeds means no random controls
PERTURBATION_CONDITIONS = PERTURBATION["conditions"] or config["ablation"]["conditions"]
PERTURBATION_SEEDS = (
    config["ablation"]["random_seeds"] if PERTURBATION["random_seeds"] is None else PERTURBATION["random_seeds"]
)
if PERTURBATION["split"] == "eval":
    PERTURBATION_PROMPTS = config["evaluation"]["prompts"]
    PERTURBATION_CHAT = config["evaluation"]["chat"]
else:
    PERTURBATION_PROMPTS = {"default": config["lens"]["prompt"]}
    PERTURBATION_CHAT = config["lens"]["chat"]


def perturbation_prompt_flags(wildcards):
    """--prompt (the default template) and --prompts DOMAIN=TEMPLATE for the domains with their own
    (a function: Snakemake would read a string's braces as wildcards)."""
    flags = "--prompt " + shlex.quote(PERTURBATION_PROMPTS["default"])
    own = [f"{domain}={PERTURBATION_PROMPTS[domain]}" for domain in DOMAINS if domain in PERTURBATION_PROMPTS]
    if own:
        flags += " --prompts " + " ".join(shlex.quote(pair) for pair in own)
    return flags + (" --chat" if PERTURBATION_CHAT else "")


rule perturbation:
    input:
        model=model_files,
        neurons="results/{model}/neurons.json",
        data=expand("data/{domain}/{split}.parquet", domain=DOMAINS, split=PERTURBATION["split"]),
    output:
        table="results/{model}/perturbation/perturbation.csv",
        summary="results/{model}/perturbation/summary.json",
        figures=directory("results/{model}/perturbation/figures"),
    log:
        "logs/perturbation/{model}.log",
    conda:
        "../envs/mmneuron.yaml"
    threads: workflow.cores if config["device"] == "cpu" else 2
    resources:
        gpu=0 if config["device"] == "cpu" else 1,
    params:
        model=model_path,
        settings=PERTURBATION,
        conditions=" ".join(PERTURBATION_CONDITIONS),
        seeds=f"--random-seeds {' '.join(map(str, PERTURBATION_SEEDS))}" if PERTURBATION_SEEDS else "",
        prompts=perturbation_prompt_flags,
    shell:
        MMNEURON + " perturb --model {params.model:q} --name {wildcards.model} --neurons {input.neurons}"
        " --data {input.data} --conditions {params.conditions} {params.seeds}"
        " --out {output.table} --summary {output.summary} --figures {output.figures}"
        " --limit {params.settings[samples]} --batch-size {params.settings[batch_size]} {params.prompts}"
        " --value {config[ablation][value]} --device {config[device]} --threads {threads} > {log} 2>&1"
