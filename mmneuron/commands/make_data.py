"""``mmneuron make-data``: draw one synthetic domain's splits into the sample format."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mmneuron.defaults import DATA, DEMO_DOMAINS, RUN

from . import CommandError, key_values, positive_int

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("make-data", help="generate a synthetic demo domain (all its splits)")
    parser.add_argument("--domain", required=True, choices=DEMO_DOMAINS)
    parser.add_argument(
        "--sizes", nargs="+", required=True, metavar="SPLIT=COUNT", help="samples per split, e.g. train=2000"
    )
    parser.add_argument("--image-size", type=positive_int, default=DATA.image_size)
    parser.add_argument("--seed", type=int, default=RUN.seed)
    parser.add_argument("--out-dir", type=Path, default=Path("data"))
    parser.set_defaults(func=run)


def _sizes(pairs: list[str]) -> dict[str, int]:
    sizes = key_values(pairs, "--sizes", "SPLIT=COUNT pairs such as train=2000")
    for split, count in sizes.items():
        if not count.isdigit():
            raise CommandError(f"--sizes: the count of {split!r} must be a whole number, got {count!r}")
    return {split: int(count) for split, count in sizes.items()}


def run(args: argparse.Namespace) -> int:
    from mmneuron.data import synthetic
    from mmneuron.data.samples import write_samples

    for split, count in _sizes(args.sizes).items():
        samples = synthetic.generate(args.domain, split, count, seed=args.seed, image_size=args.image_size)
        path = args.out_dir / args.domain / f"{split}.parquet"
        write_samples(samples, path)
        log.info("wrote %d %s samples to %s", len(samples), args.domain, path)
    return 0
