"""``mmneuron extract``: count active neurons of a model over a samples file into a counts file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mmneuron.defaults import ANYRES_PADDING, EXTRACTION

from . import CommandError, add_model_arguments, load_model, positive_int, shard_spec, share

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extract", help="count each MLP neuron's active token positions over a samples file")
    add_model_arguments(parser, name_default="--model")
    parser.add_argument("--data", required=True, type=Path, help="samples file (.parquet)")
    parser.add_argument("--out", required=True, type=Path, help="counts file to write (.safetensors)")
    parser.add_argument("--batch-size", type=positive_int, default=EXTRACTION.batch_size)
    parser.add_argument("--sites", nargs="+", metavar="SITE", help="sites to record (default: all of the model's)")
    parser.add_argument("--limit", type=positive_int, help="use only the first LIMIT samples (before sharding)")
    parser.add_argument(
        "--shard", type=shard_spec, default=(1, 1), help="count only shard i/n: the i-th contiguous block (default 1/1)"
    )
    parser.add_argument(
        "--prompt",
        default=EXTRACTION.prompt,
        help=r"statistics prompt: {question}, {options}, meta fields; <image> marks the image; \n is a newline",
    )
    parser.add_argument(
        "--anyres-padding",
        choices=ANYRES_PADDING,
        default=EXTRACTION.anyres_padding,
        help="LLaVA-NeXT's tile padding in the vision tower and projector: skip (not counted) or count "
        "(the authors' code); default %(default)s",
    )
    parser.add_argument(
        "--max-bad-share",
        type=share,
        default=EXTRACTION.max_bad_share,
        help="fail when more than this share of samples has a bad image",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.data.samples import read_samples, shard
    from mmneuron.extract import extract_counts

    index, count = args.shard
    every = read_samples(args.data, limit=args.limit)
    if not every:
        raise CommandError(f"--data: no samples in {args.data}")
    samples = shard(every, index, count)
    domains = {sample.domain for sample in every}  # known even when this shard is empty
    model, processor = load_model(args)
    log.info(
        "%s on %s (%s): %d samples of %s, shard %s",
        args.model,
        model.device,
        model.dtype,
        len(samples),
        args.data,
        f"{index}/{count}",
    )
    counts = extract_counts(
        model,
        processor,
        samples,
        prompt_template=args.prompt.replace("\\n", "\n"),
        batch_size=args.batch_size,
        sites=args.sites,
        max_bad_share=args.max_bad_share,
        anyres_padding=args.anyres_padding,
        progress=not args.no_progress,
        model_name=args.name or args.model,
        domain=domains.pop() if len(domains) == 1 else None,
        settings={
            "data": str(args.data),
            "limit": args.limit,
            "shard": f"{index}/{count}",
            "device": str(model.device),
        },
    )
    counts.save(args.out)
    log.info("wrote %s: %d samples counted, %d skipped", args.out, counts.samples, len(counts.skipped))
    return 0
