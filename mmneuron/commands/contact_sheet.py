"""``mmneuron contact-sheet``: a PNG grid of a few samples per domain, for people to look at."""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path

from mmneuron.defaults import DATA

from . import positive_int

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("contact-sheet", help="draw a few samples of each domain into one PNG")
    parser.add_argument("samples", nargs="+", type=Path, help="samples files (parquet)")
    parser.add_argument("--per-domain", type=positive_int, default=DATA.contact_sheet_per_domain)
    parser.add_argument("--out", type=Path, required=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.data.contact_sheet import write_contact_sheet
    from mmneuron.data.samples import read_samples

    by_domain = defaultdict(list)
    for path in args.samples:
        for sample in read_samples(path, limit=args.per_domain):
            by_domain[sample.domain].append(sample)
    write_contact_sheet(dict(by_domain), args.out, per_domain=args.per_domain)
    log.info("wrote %s (%s)", args.out, ", ".join(f"{d}: {len(s)}" for d, s in by_domain.items()))
    return 0
