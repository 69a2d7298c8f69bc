"""``mmneuron select``: domain-specific neurons by DAPE, with their table, statistics and figures."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from ..counts import SCOPES, CountsError, load_many
from ..neuron_stats import stats_table
from ..selection import DEFAULTS, SelectionError, select

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "select",
        help="select domain-specific neurons (DAPE) from activation counts",
        description="Outputs not named go beside --out: {stem}.csv, lape_{site}.pt, neuron_stats.csv, figures/.",
    )
    parser.add_argument(
        "--counts",
        nargs="+",
        required=True,
        type=Path,
        metavar="FILE",
        help="counts files; the domain comes from each file, files of one domain are merged",
    )
    parser.add_argument("--out", required=True, type=Path, help="neurons.json to write")
    parser.add_argument(
        "--top-rate",
        type=float,
        default=DEFAULTS["top_rate"],
        help="share of each site's neurons to select (default %(default)s)",
    )
    parser.add_argument(
        "--filter-rate",
        type=float,
        default=DEFAULTS["filter_rate"],
        help="percentile of p a candidate must exceed in some domain (default %(default)s)",
    )
    parser.add_argument(
        "--assign-rate",
        type=float,
        default=DEFAULTS["assign_rate"],
        help="percentile of p a neuron must exceed to belong to a domain (default %(default)s)",
    )
    parser.add_argument("--scope", choices=SCOPES, default=DEFAULTS["scope"], help="token positions counted")
    parser.add_argument("--table", type=Path, help="tidy CSV, one row per selected neuron")
    parser.add_argument("--lape-dir", type=Path, help="folder for the LAPE-compatible lape_{site}.pt")
    parser.add_argument("--half-a", nargs="+", type=Path, metavar="FILE", help="counts of one half of the samples")
    parser.add_argument("--half-b", nargs="+", type=Path, metavar="FILE", help="counts of the other half")
    parser.add_argument("--stats", type=Path, help="statistics CSV (with split-half stability when halves are given)")
    parser.add_argument("--figures", type=Path, help="folder for the figures (PNG and PDF)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (CountsError, SelectionError) as exc:
        raise SystemExit(f"mmneuron select: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    if (args.half_a is None) != (args.half_b is None):
        raise SystemExit("mmneuron select: --half-a and --half-b go together")
    out: Path = args.out
    rates = {
        "top_rate": args.top_rate,
        "filter_rate": args.filter_rate,
        "assign_rate": args.assign_rate,
        "scope": args.scope,
    }
    selection = select(list(load_many(args.counts).values()), **rates)
    halves = None
    if args.half_a is not None:
        halves = tuple(select(list(load_many(files).values()), **rates) for files in (args.half_a, args.half_b))
        for name, half in zip(("--half-a", "--half-b"), halves):
            if half.domains != selection.domains:
                raise SystemExit(f"mmneuron select: {name} covers domains {half.domains}, --counts {selection.domains}")
    stats = stats_table(selection, halves)

    selection.save(out)
    _write_csv(selection.table(), args.table or out.with_suffix(".csv"))
    _write_csv(stats, args.stats or out.parent / "neuron_stats.csv")
    for site in selection.sites:
        selection.save_lape(site, (args.lape_dir or out.parent) / f"lape_{site}.pt")
    from ..plots.neurons import plot_all  # here, not at the top: every mmneuron command imports this module

    plot_all(selection, args.figures or out.parent / "figures")
    for name, site in sorted(selection.sites.items()):
        log.info(
            "%s: %d of k=%d selected (%d candidates); per domain %s",
            name,
            len(site.selected),
            site.k,
            site.candidates,
            {d: len(n) for d, n in site.by_domain.items()},
        )
    return 0


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
