"""`mmneuron make-data`: draw one synthetic domain's splits into the sample format."""

from __future__ import annotations

import logging
from pathlib import Path

from mmneuron.data import synthetic
from mmneuron.data.samples import write_samples

log = logging.getLogger(__name__)


def _split_size(text: str) -> tuple[str, int]:
    split, _, count = text.partition("=")
    if not split or not count.isdigit():
        raise ValueError(f"--sizes expects SPLIT=COUNT pairs such as train=2000, got {text!r}")
    return split, int(count)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("make-data", help="generate a synthetic demo domain (all its splits)")
    parser.add_argument("--domain", required=True, choices=synthetic.DOMAINS)
    parser.add_argument("--sizes", nargs="+", type=_split_size, required=True, metavar="SPLIT=COUNT")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("data"))
    parser.set_defaults(func=run)


def run(args) -> None:
    for split, count in args.sizes:
        samples = synthetic.generate(args.domain, split, count, seed=args.seed, image_size=args.image_size)
        path = args.out_dir / args.domain / f"{split}.parquet"
        write_samples(samples, path)
        log.info("wrote %d %s samples to %s", len(samples), args.domain, path)
