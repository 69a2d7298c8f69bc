"""``mmneuron score``: score ablation answers, with effect sizes against ``none`` and figures."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mmneuron.defaults import ABLATION, LINGO_JUDGE, RUN

from . import CommandError, device, key_values, positive_int

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score answers files: tidy score table, random-control summary, figures",
        description="Outputs not named go beside --out: {stem}_random.csv (the random controls over seeds).",
    )
    parser.add_argument(
        "answers",
        nargs="+",
        type=Path,
        metavar="ANSWERS",
        help="answers files, or folders of them (*.jsonl, recursively)",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        required=True,
        metavar="DOMAIN=METRIC",
        help=f"metric per domain: a name of mmneuron.vqa.metrics or {LINGO_JUDGE}",
    )
    parser.add_argument(
        "--breakdown",
        nargs="*",
        default=[],
        metavar="DOMAIN=META_KEY",
        help="also score each value of a sample meta field apart, e.g. rs=question_type",
    )
    parser.add_argument("--out", required=True, type=Path, help="tidy score CSV")
    parser.add_argument("--random-out", type=Path, help="random-control summary CSV")
    parser.add_argument("--figures", type=Path, help="folder for the figures (PNG and PDF); none if omitted")
    parser.add_argument("--judge", help=f"Lingo-Judge folder or id, for domains scored by {LINGO_JUDGE}")
    parser.add_argument(
        "--n-boot", type=positive_int, default=ABLATION.n_boot, help="bootstrap resamples (%(default)s)"
    )
    parser.add_argument("--seed", type=int, default=RUN.seed, help="bootstrap seed")
    parser.add_argument("--device", type=device, default="cpu", help="device of the judge")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.ablation.scoring import load_runs, score_runs, summarize_random
    from mmneuron.plots.ablation import plot_all

    metrics = key_values(args.metrics, "--metrics", "DOMAIN=METRIC")
    breakdown = key_values(args.breakdown, "--breakdown", "DOMAIN=META_KEY")
    judge = None
    if LINGO_JUDGE in metrics.values():
        if not args.judge:
            raise CommandError(f"--metrics: a domain is scored by {LINGO_JUDGE}; give --judge")
        from mmneuron.vqa.judge import LingoJudge

        judge = LingoJudge.load(args.judge, device=args.device)
    files = [found for path in args.answers for found in (sorted(path.rglob("*.jsonl")) if path.is_dir() else [path])]
    table = score_runs(load_runs(files), metrics, judge=judge, n_boot=args.n_boot, seed=args.seed, breakdown=breakdown)
    summary = summarize_random(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    random_out = args.random_out or args.out.with_name(f"{args.out.stem}_random.csv")
    random_out.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(random_out, index=False)
    if args.figures:
        plot_all(table, summary, args.figures)
    log.info(
        "%d score row(s) from %d file(s) -> %s; %d random-control row(s) -> %s",
        len(table),
        len(args.answers),
        args.out,
        len(summary),
        random_out,
    )
    return 0
