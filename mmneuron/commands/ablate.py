"""``mmneuron ablate``: answer one domain's evaluation samples with a neuron set deactivated."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mmneuron.defaults import ABLATION, DECODINGS, EVALUATION, RUN

from . import (
    CommandError,
    add_intervention_arguments,
    add_model_arguments,
    load_model,
    load_stats,
    positive_int,
    shard_spec,
)

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
        help="VQA answers of one domain under a group of runs (conditions and controls), one model load (JSONL)",
        description="A run is CONDITION/VARIANT. Conditions: none, a site (lm), sites joined by '+' "
        "(qformer+query), or all, optionally with @ and how: SITES@[mean|x<factor>][_image|_text][_prefill] "
        "(the neurons' mean activation, their output times a factor; image or text positions only; the prefill "
        "only; default: --value at every position and step). "
        "Variants: own (the evaluated domain's neurons: the samples' domain), "
        "random<seed> (as many random neurons per site and layer) or from_<domain> (another domain's).",
    )
    add_model_arguments(parser, name_default="the neuron file's")
    parser.add_argument("--neurons", required=True, type=Path, help="neurons.json of `mmneuron select`")
    parser.add_argument("--data", required=True, type=Path, metavar="PARQUET", help="evaluation samples of one domain")
    parser.add_argument(
        "--runs", nargs="+", required=True, metavar="RUN", help="runs: lm/own, all/random1, lm/from_rs ..."
    )
    parser.add_argument(
        "--shard", type=shard_spec, default=(1, 1), help="answer only shard i/n of the samples (default 1/1)"
    )
    parser.add_argument("--out", required=True, type=Path, help="answers JSONL to write (every run's records)")
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
    add_intervention_arguments(parser)
    parser.add_argument(
        "--likelihood",
        action=argparse.BooleanOptionalAction,
        default=ABLATION.likelihood,
        help="also the reference answer's teacher-forced log-likelihood (default %(default)s)",
    )
    parser.add_argument("--limit", type=positive_int, help="first N samples only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.ablation.answers import write_answers
    from mmneuron.ablation.run import Settings, run_ablation
    from mmneuron.conditions import Condition, condition_sites
    from mmneuron.data.samples import read_samples, shard, usable
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
    conditions = [Condition.from_run(run) for run in args.runs]
    selection = Selection.load(args.neurons)
    for condition in conditions:  # before the model loads
        condition_sites(condition.name, list(selection.sites))
    counts = load_stats(args, conditions)
    every = read_samples(args.data, args.limit)
    if not every:
        raise CommandError(f"--data: no samples in {args.data}")
    # shards of whole batches of the usable samples: each holds batches one job over all would make,
    # so the shards gather into exactly that job's answers
    samples, skipped = usable(every)
    samples = shard(samples, *args.shard, unit=args.batch_size)
    if not samples:  # more shards than samples: this one has nothing to answer
        write_answers([], args.out)
        log.info("%s: shard %d/%d of %s holds no sample", args.out, *args.shard, args.data)
        return 0
    model, processor = load_model(args)
    records, _ = run_ablation(
        model, processor, samples, selection, conditions, settings, args.name or selection.model, counts=counts
    )
    write_answers(records, args.out)
    log.info(
        "%s: %d answer(s) of %d run(s) over shard %d/%d (%d sample(s)); %d sample(s) skipped",
        args.out,
        len(records),
        len(conditions),
        *args.shard,
        len(samples),
        len(skipped),
    )
    return 0
