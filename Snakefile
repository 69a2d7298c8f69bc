# mmneuron: domain-specific neurons in multimodal LLMs (MMNeuron, EMNLP 2024).
# This file only orchestrates: every step is a `mmneuron` subcommand; the logic lives in mmneuron/.
# Every config value a command uses reaches it as a param of its own (rules/common.smk says why).
import shlex

from snakemake.utils import min_version, validate

min_version("9.0")


# The default config sits beside this file, so `--directory` can put data/ and results/ elsewhere.
configfile: f"{workflow.basedir}/config/config.yaml"


# `models: {NAME: null}` in a config file drops a model that a config underneath names (mappings merge key
# by key, so it could not be removed otherwise).
config["models"] = {name: entry for name, entry in config.get("models", {}).items() if entry is not None}
validate(config, "config/schema.yaml")

# The package is run from this checkout, so rules work in the project venv and in `--use-conda`
# environments (which hold the dependencies only) alike. A prefix of every shell command rather than part
# of each, so the checkout's location is no part of any rule's code (which the `code` rerun trigger compares).
# (Braces doubled twice: once for this f-string, once for the prefix's own formatting.)
shell.prefix(f"set -eu; export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")


# Shards (Snakemake's scatter/gather; `--set-scatter extraction=4` overrides): extraction jobs per half of
# each domain's statistics samples, and answer-generation jobs per domain.
scattergather:
    extraction=config["extraction"]["shards"],
    generation=config["ablation"]["shards"],


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/activations.smk"
include: "rules/neurons.smk"
include: "rules/logit_lens.smk"
include: "rules/ablation.smk"
include: "rules/perturbation.smk"
include: "rules/report.smk"


rule all:
    input:
        rules.contact_sheet.output,
        # the demo model only when a model runs from it
        *([rules.demo_model.output] if any(model_files_of(name) for name in MODELS) else []),
        expand("results/{model}/neurons.json", model=MODELS),
        expand("results/{model}/neurons/{method}.json", model=MODELS, method=OTHER_METHODS),
        expand("results/{model}/neurons/method_overlaps.csv", model=MODELS),
        expand("results/{model}/neurons/sample_curve.csv", model=MODELS),
        expand("results/{model}/lens/lens.csv", model=MODELS),
        expand("results/{model}/ablation/scores.csv", model=MODELS),
        expand("results/{model}/perturbation/perturbation.csv", model=MODELS),
        rules.report.output,
