# mmneuron: domain-specific neurons in multimodal LLMs (MMNeuron, EMNLP 2024).
# This file only orchestrates: every step is a `mmneuron` subcommand; the logic lives in mmneuron/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")

DOMAINS = config["domains"]
# The package is run from this checkout, so rules work in the project venv and in `--use-conda`
# environments (which hold the dependencies only) alike.
# (Braces doubled twice: once for this f-string, once for the shell directive's own formatting.)
MMNEURON = f"PYTHONPATH={workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}} python -m mmneuron"


include: "rules/data.smk"
include: "rules/models.smk"


rule all:
    input:
        rules.contact_sheet.output,
        rules.train_demo_model.output,
