"""``mmneuron install-model``: copy a shipped model folder (the demo model) after checking its checksums."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "install-model", help="copy a shipped model folder after checking every file against its SHA256SUMS"
    )
    parser.add_argument("--from", dest="source", required=True, type=Path, help="the shipped folder (models/demo)")
    parser.add_argument("--out", required=True, type=Path, help="the model folder to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.models.shipped import install

    copies = install(args.source, args.out)
    log.info("%s: %d checked file(s) from %s", args.out, len(copies), args.source)
    return 0
