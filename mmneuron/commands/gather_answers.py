"""``mmneuron gather-answers``: one answers file per run from the shards of a domain's ablation jobs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from . import CommandError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gather-answers",
        help="split the answers of a domain's ablation jobs (groups of runs, shards of samples) into one file per run",
        description="Give the shards in order; each run's file then holds what one job over all samples writes.",
    )
    parser.add_argument("answers", nargs="+", type=Path, metavar="ANSWERS.jsonl", help="answers of `mmneuron ablate`")
    parser.add_argument("--out-dir", required=True, type=Path, help="folder of {condition}/{variant}.jsonl files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.ablation.answers import gather_answers, write_runs

    runs = gather_answers(args.answers)
    domains = sorted({domain for domain, _ in runs})
    if len(domains) != 1:
        raise CommandError(f"the answers hold domains {domains}; gather one domain's at a time")
    paths = write_runs(runs, args.out_dir)
    log.info("%s: %d run(s) of domain %s from %d file(s)", args.out_dir, len(paths), domains[0], len(args.answers))
    return 0
