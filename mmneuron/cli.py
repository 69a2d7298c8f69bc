"""The ``mmneuron`` command: one subcommand per stage, each defined in ``mmneuron.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines ``add_parser(subparsers)``, whose parser sets ``func`` to its runner.
COMMANDS = (
    "make_data",
    "contact_sheet",
    "train_demo",
    "extract",
    "merge",
    "select",
    "lens",
    "ablate",
    "score",
    "perturb",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmneuron", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mmneuron.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
