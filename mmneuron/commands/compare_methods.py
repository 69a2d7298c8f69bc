"""``mmneuron compare-methods``: the overlap of different selectors' neuron sets, table and figure."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from . import CommandError, key_values

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare-methods", help="Jaccard overlap between selection methods' neuron sets, per site and domain"
    )
    parser.add_argument(
        "--neurons", nargs="+", required=True, metavar="METHOD=FILE", help="each method's neurons.json, in order"
    )
    parser.add_argument("--out", required=True, type=Path, help="overlap CSV")
    parser.add_argument("--figure", type=Path, help="figure stem (PNG and PDF); none if omitted")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.neuron_stats import method_overlaps
    from mmneuron.plots.selectors import plot_method_overlaps
    from mmneuron.selection import Selection

    files = key_values(args.neurons, "--neurons", "METHOD=FILE")
    selections = {name: Selection.load(path) for name, path in files.items()}
    for name, selection in selections.items():
        if selection.method != name:
            raise CommandError(f"--neurons {name}={files[name]}: the file holds method {selection.method!r}")
    table = method_overlaps(selections)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    if args.figure:
        plot_method_overlaps(table, args.figure)
    log.info("%d overlap row(s) of %d method(s) -> %s", len(table), len(selections), args.out)
    return 0
