"""``mmneuron perturb``: how far deactivation moves each LLM layer's hidden states, per domain.

One job per model: every condition (and its random controls) over every domain's samples, one
clean forward per batch shared by all conditions.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mmneuron.defaults import PERTURBATION

from . import (
    add_intervention_arguments,
    add_model_arguments,
    add_samples_arguments,
    key_values,
    load_model,
    load_stats,
    positive_int,
    read_samples_files,
)
from .ablate import add_evaluation_prompt_arguments

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "perturb",
        help="hidden-state perturbation under deactivation: per LLM layer, cosine and relative L2 against the clean "
        "run",
        description="Conditions: none, a site (lm), sites joined by '+' (qformer+query), or all; each domain's own "
        "neurons are deactivated, and with --random-seeds also as many random neurons per site and layer. "
        "Outputs not named go beside --out: {stem}_summary.json.",
    )
    add_model_arguments(parser, name_default="the neuron file's")
    parser.add_argument("--neurons", required=True, type=Path, help="neurons.json of `mmneuron select`")
    add_samples_arguments(parser)
    parser.add_argument(
        "--conditions",
        nargs="+",
        required=True,
        metavar="NAME",
        help="sites to deactivate per condition: none, all, SITE or SITE+SITE...",
    )
    parser.add_argument(
        "--random-seeds",
        nargs="*",
        type=int,
        default=[],
        metavar="SEED",
        help="random controls of every condition but none, one per seed",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="tidy CSV: one row per condition, control, domain, scope and layer"
    )
    parser.add_argument("--summary", type=Path, help="JSON: settings, samples, neurons deactivated, skipped samples")
    parser.add_argument("--figures", type=Path, help="folder for the figures (PNG and PDF); none if omitted")
    parser.add_argument("--batch-size", type=positive_int, default=PERTURBATION.batch_size)
    add_evaluation_prompt_arguments(parser)
    parser.add_argument(
        "--prompts",
        nargs="*",
        default=[],
        metavar="DOMAIN=TEMPLATE",
        help="a domain's own prompt template instead of --prompt",
    )
    add_intervention_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.conditions import NONE, Condition, condition_sites
    from mmneuron.perturbation import run_perturbation
    from mmneuron.plots.perturbation import plot_all
    from mmneuron.selection import Selection

    conditions = [Condition(name) for name in args.conditions]
    conditions += [Condition(name, seed) for name in args.conditions if name != NONE for seed in args.random_seeds]
    prompts = {
        domain: template.replace("\\n", "\n")
        for domain, template in key_values(args.prompts, "--prompts", "DOMAIN=TEMPLATE").items()
    }
    selection = Selection.load(args.neurons)
    for name in args.conditions:  # before the model loads
        condition_sites(name, list(selection.sites))
    counts = load_stats(args, conditions)
    samples = read_samples_files(args.data, args.limit, "--data")
    model, processor = load_model(args)
    name = args.name or selection.model
    result = run_perturbation(
        model,
        processor,
        samples,
        selection,
        conditions,
        args.prompt.replace("\\n", "\n"),
        prompts,
        args.chat,
        args.batch_size,
        args.value,
        name,
        counts=counts,
    )
    table = result.table()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    summary_path = args.summary or args.out.with_name(f"{args.out.stem}_summary.json")
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": name,
        "neurons": str(args.neurons),
        "settings": result.settings,
        "conditions": [
            {
                "condition": c.name,
                "control": c.control,
                "seed": c.seed,
                "intervention": c.intervention(args.value).record(),
                "deactivated": {d: n for (cc, d), n in result.deactivated.items() if cc == c},
            }
            for c in conditions
        ],
        "samples": dict(result.samples),
        "skipped": result.skipped,
    }
    summary_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    if args.figures:
        plot_all(table, args.figures, title=name)
    log.info(
        "perturbation of %d condition(s) over %d sample(s) of %d domain(s); %d skipped (corrupt images)",
        len(conditions),
        sum(result.samples.values()),
        len(result.samples),
        len(result.skipped),
    )
    return 0
