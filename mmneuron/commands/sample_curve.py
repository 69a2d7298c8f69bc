"""``mmneuron sample-curve``: the selection on growing numbers of statistics shards against the
selection on all of them, per method (how many samples are enough)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mmneuron.defaults import SELECTION, SELECTION_METHODS

from . import positive_int
from .select import add_selector_options, selector_settings

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample-curve", help="overlap of selections on 1, 2, 4, ... merged shards with the selection on all shards"
    )
    parser.add_argument(
        "--shards",
        nargs="+",
        required=True,
        type=Path,
        metavar="FILE",
        help="counts files of single shards; the domain comes from each file, in the order given",
    )
    parser.add_argument("--methods", nargs="+", choices=SELECTION_METHODS, default=SELECTION.methods)
    parser.add_argument(
        "--max-shards", type=positive_int, help="grow to this many shards per domain (default: all of them)"
    )
    add_selector_options(parser)
    parser.add_argument("--out", required=True, type=Path, help="curve CSV")
    parser.add_argument("--figure", type=Path, help="figure stem (PNG and PDF); none if omitted")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.counts import Counts
    from mmneuron.plots.selectors import plot_sample_curve
    from mmneuron.sample_curve import sample_curve

    shards: dict[str, list] = {}
    for path in args.shards:
        counts = Counts.load(path)
        shards.setdefault(counts.domain, []).append(counts)
    table = sample_curve(shards, args.methods, args.max_shards, **selector_settings(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    if args.figure:
        plot_sample_curve(table, args.figure)
    log.info("%d curve row(s), %d method(s), %d domain(s) -> %s", len(table), len(args.methods), len(shards), args.out)
    return 0
