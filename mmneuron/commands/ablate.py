"""``mmneuron ablate``: answer one domain's evaluation samples with a neuron set deactivated."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mmneuron.defaults import ABLATION, DECODINGS, EVALUATION, RUN

from . import CommandError, add_model_arguments, load_model, positive_int

log = logging.getLogger(__name__)


def add_evaluation_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """--prompt and --chat, as the ablation and the perturbation fill in evaluation prompts."""
    parser.add_argument(
        "--prompt",
        default=EVALUATION.prompts["default"],
        help="prompt template: {question}, {options} and meta fields; at most one <image> (default %(default)r)",
    )
    parser.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=EVALUATION.chat,
        help="wrap the prompt as a user turn of the chat template (default %(default)s)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate",
        help="VQA answers of one domain with a condition's neurons deactivated (JSONL)",
        description="Conditions: none, a site (lm), sites joined by '+' (qformer+query), or all. The domain is "
        "the samples'; its own neurons are deactivated unless --source-domain names another.",
    )
    add_model_arguments(parser, name_default="the neuron file's")
    parser.add_argument("--neurons", required=True, type=Path, help="neurons.json of `mmneuron select`")
    parser.add_argument("--data", required=True, type=Path, metavar="PARQUET", help="evaluation samples of one domain")
    parser.add_argument("--condition", required=True, help="sites to deactivate: none, all, SITE or SITE+SITE...")
    parser.add_argument(
        "--random-seed",
        type=int,
        help="random control: as many random neurons per site and layer, drawn with this seed",
    )
    parser.add_argument("--source-domain", help="deactivate this domain's neurons (cross-domain matrix)")
    parser.add_argument("--out", required=True, type=Path, help="answers JSONL to write")
    add_evaluation_prompt_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=ABLATION.batch_size)
    parser.add_argument("--max-new-tokens", type=positive_int, default=ABLATION.max_new_tokens)
    parser.add_argument(
        "--decoding",
        choices=DECODINGS,
        default=ABLATION.decoding,
        help="greedy, or compat: sampling at --temperature like the authors, seeded by --seed",
    )
    parser.add_argument("--temperature", type=float, default=ABLATION.temperature)
    parser.add_argument("--seed", type=int, default=RUN.seed, help="seed of compat sampling")
    parser.add_argument("--value", type=float, default=ABLATION.value, help="output of a deactivated neuron")
    parser.add_argument(
        "--likelihood",
        action=argparse.BooleanOptionalAction,
        default=ABLATION.likelihood,
        help="also the reference answer's teacher-forced log-likelihood (default %(default)s)",
    )
    parser.add_argument("--limit", type=positive_int, help="first N samples only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.ablation.run import Settings, run_ablation, write_answers
    from mmneuron.conditions import Condition, condition_sites
    from mmneuron.data.samples import read_samples
    from mmneuron.selection import Selection

    settings = Settings(
        prompt=args.prompt.replace("\\n", "\n"),
        chat=args.chat,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        decoding=args.decoding,
        temperature=args.temperature,
        seed=args.seed,
        likelihood=args.likelihood,
        value=args.value,
    )
    condition = Condition(args.condition, args.random_seed, args.source_domain)
    selection = Selection.load(args.neurons)
    condition_sites(condition.name, list(selection.sites))  # before the model loads
    samples = read_samples(args.data, args.limit)
    if not samples:
        raise CommandError(f"--data: no samples in {args.data}")
    model, processor = load_model(args)
    records, skipped = run_ablation(
        model, processor, samples, selection, condition, settings, args.name or selection.model
    )
    write_answers(records, args.out)
    deactivated = records[0]["deactivated"] if records else 0
    log.info(
        "%s: %d answer(s) under condition %s (%s, %d neuron(s) deactivated); %d sample(s) skipped",
        args.out,
        len(records),
        condition.name,
        condition.control,
        deactivated,
        len(skipped),
    )
    return 0
