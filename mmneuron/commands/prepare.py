"""``mmneuron prepare``: draw N samples of a real dataset (or a folder of one's own) into the sample format."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mmneuron.data.sources import SOURCES, load_source
from mmneuron.data.sources.base import SPLITS
from mmneuron.defaults import EXTRACTION, RUN

from . import CommandError, positive_int, share

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="draw N samples of a dataset source into data/{domain}/{split}.parquet",
        description="Draw N samples of a dataset source into the sample format; "
        "`mmneuron prepare SOURCE --help` lists the source's own options.",
    )
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE", parser_class=type(parser))
    for name in SOURCES:
        module = load_source(name)
        source = sources.add_parser(name, help=module.__doc__.splitlines()[0])
        _add_common(source, module.DOMAIN)
        module.add_arguments(source.add_argument_group(f"{name} options"))
    parser.set_defaults(func=run)


def _add_common(parser: argparse.ArgumentParser, domain: str | None) -> None:
    parser.add_argument(
        "--split",
        required=True,
        choices=SPLITS,
        help="stats (the paper's statistics split) or eval (its evaluation split)",
    )
    parser.add_argument("--n", required=True, type=positive_int, help="samples to draw")
    parser.add_argument("--seed", type=int, default=RUN.seed, help="seed of the draw (default %(default)s)")
    parser.add_argument("--out", required=True, type=Path, help="samples file to write, e.g. data/com/stats.parquet")
    parser.add_argument(
        "--domain",
        default=domain,
        help="domain recorded in the samples" + (f" (default {domain})" if domain else " (required)"),
    )
    parser.add_argument(
        "--max-bad-share",
        type=share,
        default=EXTRACTION.max_bad_share,
        help="fail when more than this share of rows is malformed, or of images read is missing or corrupt",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from mmneuron.data.sources.base import prepare

    if not args.domain:
        raise CommandError(f"--domain: the {args.source} source stands for no domain of its own; name one")
    module = load_source(args.source)
    log.info("licence of %s: %s", args.source, " ".join(module.LICENCE.split()))
    metadata = prepare(
        module,
        args,
        split=args.split,
        n=args.n,
        seed=args.seed,
        out=args.out,
        domain=args.domain,
        max_bad_share=args.max_bad_share,
        progress=not args.no_progress,
    )
    log.info(
        "wrote %d %s samples (%s %s) to %s; %d skipped",
        metadata["n"],
        args.domain,
        args.source,
        metadata["official_split"],
        args.out,
        len(metadata["skipped"]),
    )
    return 0
