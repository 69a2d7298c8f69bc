"""``mmneuron extract``: count active neurons of a model over a samples file into a counts file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from mmneuron.data.samples import read_samples
from mmneuron.extract import DEFAULT_PROMPT, extract_counts, parse_shard, shard
from mmneuron.models.loading import DTYPES, load_model

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extract", help="count each MLP neuron's active token positions over a samples file")
    parser.add_argument("--model", required=True, help="model folder or Hugging Face id")
    parser.add_argument("--data", required=True, type=Path, help="samples file (.parquet)")
    parser.add_argument("--out", required=True, type=Path, help="counts file to write (.safetensors)")
    parser.add_argument("--name", help="model name recorded in the counts (default: --model)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sites", nargs="+", metavar="SITE", help="sites to record (default: all of the model's)")
    parser.add_argument("--limit", type=int, help="use only the first LIMIT samples (before sharding)")
    parser.add_argument(
        "--shard", default="1/1", help="count only shard i of n: the i-th contiguous block (default 1/1)"
    )
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", *DTYPES], help="auto: bfloat16 on a GPU, float32 on CPU"
    )
    parser.add_argument(
        "--prompt",
        default=DEFAULT_PROMPT,
        help=r"statistics prompt; {question} is replaced, <image> marks the image, \n is a newline",
    )
    parser.add_argument(
        "--max-bad-share", type=float, default=0.0, help="fail when more than this share of samples has a bad image"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    index, count = parse_shard(args.shard)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.limit is not None and args.limit < 0:
        raise ValueError(f"--limit must not be negative, got {args.limit}")
    every = read_samples(args.data, limit=args.limit)
    samples = shard(every, index, count)
    domains = {sample.domain for sample in every}  # known even when this shard is empty
    model, processor = load_model(args.model, device=args.device, dtype=args.dtype)
    log.info(
        "%s on %s (%s): %d samples of %s, shard %s",
        args.model,
        model.device,
        model.dtype,
        len(samples),
        args.data,
        args.shard,
    )
    counts = extract_counts(
        model,
        processor,
        samples,
        prompt_template=args.prompt.replace("\\n", "\n"),
        batch_size=args.batch_size,
        sites=args.sites,
        max_bad_share=args.max_bad_share,
        progress=not args.no_progress,
        model_name=args.name or args.model,
        domain=domains.pop() if len(domains) == 1 else None,
        settings={"data": str(args.data), "limit": args.limit, "shard": args.shard, "device": str(model.device)},
    )
    counts.save(args.out)
    log.info("wrote %s: %d samples counted, %d skipped", args.out, counts.samples, len(counts.skipped))
    return 0
