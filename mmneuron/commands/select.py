"""``mmneuron select``: domain-specific neurons by DAPE (or another selector), with their table,
statistics and figures."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mmneuron.defaults import RUN, SCOPES, SELECTION, SELECTION_METHODS

from . import CommandError, key_values, share

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "select",
        help="select domain-specific neurons (DAPE or another selector) from activation counts",
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
        "--method", choices=SELECTION_METHODS, default="dape", help="selector (docs/selectors.md); %(default)s"
    )
    add_selector_options(parser)
    parser.add_argument("--table", type=Path, help="tidy CSV, one row per selected neuron")
    parser.add_argument("--lape-dir", type=Path, help="folder for the LAPE-compatible lape_{site}.pt")
    parser.add_argument("--half-a", nargs="+", type=Path, metavar="FILE", help="counts of one half of the samples")
    parser.add_argument("--half-b", nargs="+", type=Path, metavar="FILE", help="counts of the other half")
    parser.add_argument("--stats", type=Path, help="statistics CSV (with split-half stability when halves are given)")
    parser.add_argument("--figures", type=Path, help="folder for the figures (PNG and PDF)")
    parser.set_defaults(func=run)


def add_selector_options(parser: argparse.ArgumentParser) -> None:
    """The options every selector takes (rates, scope, matched sizes, MINER's mix, the random seed)."""
    parser.add_argument(
        "--match-sizes",
        action=argparse.BooleanOptionalAction,
        default=SELECTION.match_sizes,
        help="select as many neurons per site and domain as DAPE with the same rates (%(default)s)",
    )
    parser.add_argument(
        "--miner-weights",
        nargs="+",
        default=[f"{name}={value}" for name, value in SELECTION.miner_weights.items()],
        metavar="SCORE=WEIGHT",
        help="MINER's score mix over prob, mean, max (%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=RUN.seed, help="seed of the random method (%(default)s)")
    parser.add_argument(
        "--top-rate",
        type=share,
        default=SELECTION.top_rate,
        help="share of each site's neurons to select (%(default)s)",
    )
    parser.add_argument(
        "--filter-rate",
        type=share,
        default=SELECTION.filter_rate,
        help="percentile of p a candidate must exceed in some domain (%(default)s)",
    )
    parser.add_argument(
        "--assign-rate",
        type=share,
        default=SELECTION.assign_rate,
        help="percentile of p a neuron must exceed to belong to a domain (%(default)s)",
    )
    parser.add_argument(
        "--scope",
        choices=SCOPES,
        default=SELECTION.scope,
        help="token positions counted, at the sites that have them (others: all); default %(default)s",
    )


def run(args: argparse.Namespace) -> int:
    from mmneuron.counts import load_many
    from mmneuron.neuron_stats import stats_table
    from mmneuron.plots.neurons import plot_all
    from mmneuron.selectors import select

    if (args.half_a is None) != (args.half_b is None):
        raise CommandError("--half-a and --half-b go together")
    out: Path = args.out
    settings = selector_settings(args)
    selection = select(args.method, list(load_many(args.counts).values()), **settings)
    halves = None
    if args.half_a is not None:
        halves = tuple(
            select(args.method, list(load_many(files).values()), **settings) for files in (args.half_a, args.half_b)
        )
        for name, half in zip(("--half-a", "--half-b"), halves):
            if half.domains != selection.domains:
                raise CommandError(f"{name} covers domains {half.domains}, --counts {selection.domains}")
    stats = stats_table(selection, halves)

    selection.save(out)
    _write_csv(selection.table(), args.table or out.with_suffix(".csv"))
    _write_csv(stats, args.stats or out.parent / "neuron_stats.csv")
    for site in selection.sites:
        selection.save_lape(site, (args.lape_dir or out.parent) / f"lape_{site}.pt")
    plot_all(selection, args.figures or out.parent / "figures")
    for name, site in sorted(selection.sites.items()):
        log.info(
            "%s %s (scope %s): %d of k=%d selected (shortfall %d); per domain %s",
            args.method,
            name,
            site.scope,
            len(site.selected),
            site.k,
            site.shortfall,
            {d: len(n) for d, n in site.by_domain.items()},
        )
    return 0


def selector_settings(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`mmneuron.selectors.select` from the selection options."""
    weights = key_values(args.miner_weights, "--miner-weights", "SCORE=WEIGHT")
    try:
        weights = {name: float(value) for name, value in weights.items()}
    except ValueError:
        raise CommandError(f"--miner-weights: weights must be numbers, got {args.miner_weights}") from None
    return {
        "top_rate": args.top_rate,
        "filter_rate": args.filter_rate,
        "assign_rate": args.assign_rate,
        "scope": args.scope,
        "match_sizes": args.match_sizes,
        "weights": weights,
        "seed": args.seed,
    }


def _write_csv(frame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
