"""``mmneuron report``: the reproduction report (HTML and Markdown) of a run's results."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from . import CommandError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="write the reproduction report of a run's results")
    parser.add_argument("--results", type=Path, default=Path("results"), help="the run's results folder")
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME", help="models reported (results/NAME/)")
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--config", type=Path, help="the resolved configuration, a JSON or YAML file")
    given.add_argument(
        "--config-json", metavar="JSON", help="the resolved configuration as JSON text (the workflow's way)"
    )
    parser.add_argument("--markdown", required=True, type=Path, help="the Markdown report (in --results)")
    parser.add_argument("--html", required=True, type=Path, help="the HTML report (in --results)")
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace) -> dict:
    import yaml

    if args.config_json is not None:
        try:
            config = json.loads(args.config_json)
        except json.JSONDecodeError as error:
            raise CommandError(f"--config-json: not JSON ({error})") from None
        if not isinstance(config, dict):
            raise CommandError("--config-json: not a JSON object")
        return config
    path = args.config
    if not path.is_file():
        raise CommandError(f"--config: file not found: {path}")
    try:
        config = yaml.safe_load(path.read_text())  # JSON is YAML
    except yaml.YAMLError as error:
        raise CommandError(f"--config: {path} is not JSON or YAML ({type(error).__name__})") from None
    if not isinstance(config, dict):
        raise CommandError(f"--config: {path} does not hold a mapping")
    return json.loads(json.dumps(config))


def run(args: argparse.Namespace) -> int:
    from mmneuron.report.build import build

    build(args.results, args.models, _config(args), args.markdown, args.html)
    log.info("wrote %s and %s", args.html, args.markdown)
    return 0
