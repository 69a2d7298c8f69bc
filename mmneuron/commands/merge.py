"""``mmneuron merge``: sum counts files of one model and domain (e.g. shards) into one."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge", help="sum activation counts files (shards) of one model and domain")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="counts files (.safetensors)")
    parser.add_argument("--out", required=True, type=Path, help="the merged counts file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.counts import Counts, merge

    merged = merge([Counts.load(path) for path in args.files])
    merged.save(args.out)
    log.info("merged %d files (%d samples of %s) into %s", len(args.files), merged.samples, merged.domain, args.out)
    return 0
