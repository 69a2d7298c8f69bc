"""The ``mmneuron`` subcommands, one module each, and the argument handling they share.

Command modules import only the standard library and ``mmneuron.defaults`` at the top, so that
``mmneuron --help`` starts fast; torch, transformers and matplotlib are imported when a command runs.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mmneuron.defaults import MODEL, RUN
from mmneuron.errors import MmneuronError

DTYPES = ("auto", "float32", "bfloat16", "float16")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class CommandError(MmneuronError):
    """A command-line value that cannot be used; the message names the option."""


def key_values(pairs: list[str], option: str, form: str) -> dict[str, str]:
    """``KEY=VALUE`` arguments as a dict; a malformed one is a :class:`CommandError` naming the option."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise CommandError(f"{option} expects {form}, got {pair!r}")
        values[key] = value
    return values


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def share(text: str) -> float:
    """A number in [0, 1] (a rate or a share)."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def shard_spec(text: str) -> tuple[int, int]:
    """``"i/n"`` (1 <= i <= n) -> ``(i, n)``: shard i of n of a samples file."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 1 <= int(index) <= int(count):
        raise argparse.ArgumentTypeError(f"a shard is written i/n with 1 <= i <= n (e.g. 2/4), got {text!r}")
    return int(index), int(count)


def device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def add_model_arguments(parser: argparse.ArgumentParser, name_default: str) -> None:
    """--model, --name, --device, --dtype, the loading options and --threads, as every model-running
    command takes them."""
    parser.add_argument("--model", required=True, help="model folder (save_pretrained) or a Hugging Face id")
    parser.add_argument("--name", help=f"model name recorded in the outputs (default: {name_default})")
    parser.add_argument(
        "--device", type=device, default=RUN.device, help="auto (a GPU when there is one), cpu, cuda, cuda:N"
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default=RUN.dtype, help="auto: bfloat16 on a GPU, float32 on the CPU"
    )
    parser.add_argument(
        "--device-map",
        default=MODEL.device_map,
        help="place the model with accelerate's device map (auto, cpu, cuda:0 ...) instead of --device, for a "
        "model that does not fit one device (default: none)",
    )
    parser.add_argument(
        "--attn-implementation",
        default=MODEL.attn_implementation,
        help="attention implementation (eager, sdpa, flash_attention_2; default: transformers' choice)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action=argparse.BooleanOptionalAction,
        default=MODEL.trust_remote_code,
        help="let the checkpoint run code from its repository (default: off)",
    )
    parser.add_argument("--threads", type=positive_int, help="CPU threads of torch (default: torch's choice)")


def add_samples_arguments(parser: argparse.ArgumentParser) -> None:
    """--data (samples files of any domains) and --limit (samples per file)."""
    parser.add_argument(
        "--data",
        nargs="+",
        required=True,
        type=Path,
        metavar="PARQUET",
        help="samples files; the domain comes from each sample",
    )
    parser.add_argument("--limit", type=positive_int, help="samples per file (default: all)")


def read_samples_files(paths: list[Path], limit: int | None, option: str) -> list:
    """The samples of every file (the first ``limit`` of each); none at all is a :class:`CommandError`."""
    from mmneuron.data.samples import read_samples

    samples = [sample for path in paths for sample in read_samples(path, limit)]
    if not samples:
        raise CommandError(f"{option}: no samples in {', '.join(map(str, paths))}")
    return samples


def add_intervention_arguments(parser: argparse.ArgumentParser) -> None:
    """--value (what a deactivated neuron outputs) and --stats (for conditions NAME@mean...)."""
    from mmneuron.defaults import ABLATION

    parser.add_argument(
        "--value", type=float, default=ABLATION.value, help="output of a deactivated neuron (default %(default)s)"
    )
    parser.add_argument(
        "--stats",
        nargs="+",
        type=Path,
        default=[],
        metavar="COUNTS",
        help="every domain's activation statistics (safetensors): the mean activations of conditions SITES@mean...",
    )


def load_stats(args: argparse.Namespace, conditions: list) -> list:
    """The --stats counts where a condition sets neurons to their mean (before the model loads)."""
    from mmneuron.counts import load_many
    from mmneuron.hooks.deactivate import MEAN

    means = [c.name for c in conditions if c.intervention().mode == MEAN]
    if not means:
        return []
    if not args.stats:
        raise CommandError(f"condition {means[0]!r} sets neurons to their mean activation: give --stats COUNTS...")
    return list(load_many(args.stats).values())


def load_model(args: argparse.Namespace):
    """The model and processor the arguments of :func:`add_model_arguments` name."""
    import torch

    from mmneuron.models.loading import load_model as load

    if args.threads:
        torch.set_num_threads(args.threads)
    return load(
        args.model,
        args.device,
        args.dtype,
        device_map=args.device_map,
        attn_implementation=args.attn_implementation,
        trust_remote_code=args.trust_remote_code,
    )
