"""The ``mmneuron`` command: one subcommand per stage, each defined in ``mmneuron.commands``.

A user error (:class:`mmneuron.errors.MmneuronError`, or a value the parser refuses) is printed as
one line naming the command and the file, sample or key, with a non-zero exit; any other
exception is a programming error and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mmneuron.errors import MmneuronError

# Each module defines ``add_parser(subparsers)``, whose parser sets ``func`` to its runner.
COMMANDS = (
    "make_data",
    "prepare",
    "contact_sheet",
    "train_demo",
    "install_model",
    "extract",
    "merge",
    "select",
    "import_neurons",
    "compare_methods",
    "sample_curve",
    "lens",
    "ablate",
    "gather_answers",
    "score",
    "perturb",
    "report",
)
USER_ERROR = 1


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``mmneuron extract: argument --batch-size: ...``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mmneuron", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"mmneuron.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except MmneuronError as error:
        print(f"mmneuron {args.command}: {' '.join(str(error).split())}", file=sys.stderr)
        return USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
