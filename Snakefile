# mmneuron: domain-specific neurons in multimodal LLMs (MMNeuron, EMNLP 2024).
# This file only orchestrates: every step is a `mmneuron` subcommand; the logic lives in mmneuron/.
from snakemake.utils import min_version, validate

min_version("9.0")


# The default config sits beside this file, so `--directory` can put data/ and results/ elsewhere.
configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, "config/schema.yaml")

DOMAINS = config["domains"]
# The package is run from this checkout, so rules work in the project venv and in `--use-conda`
# environments (which hold the dependencies only) alike.
# (Braces doubled twice: once for this f-string, once for the shell directive's own formatting.)
MMNEURON = f"PYTHONPATH={workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}} python -m mmneuron"

MODELS = list(config["models"])


def model_path(wildcards):
    """The model folder or Hugging Face id of `wildcards.model` (config `models`)."""
    return config["models"][wildcards.model]["path"]


def model_files(wildcards):
    """A model the workflow builds (under results/models/) is an input; external ones are not."""
    path = model_path(wildcards).rstrip("/")
    return [f"{path}/model.safetensors"] if path.startswith("results/models/") else []


include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/activations.smk"
include: "rules/neurons.smk"
include: "rules/logit_lens.smk"
include: "rules/ablation.smk"
include: "rules/perturbation.smk"


rule all:
    input:
        rules.contact_sheet.output,
        rules.train_demo_model.output,
        expand("results/{model}/neurons.json", model=MODELS),
        expand("results/{model}/lens/lens.csv", model=MODELS),
        expand("results/{model}/ablation/scores.csv", model=MODELS),
        expand("results/{model}/perturbation/perturbation.csv", model=MODELS),
