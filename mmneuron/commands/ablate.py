"""``mmneuron ablate``: answer one domain's evaluation samples with a neuron set deactivated."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..ablation.conditions import Condition, ConditionError
from ..ablation.likelihood import LikelihoodError
from ..ablation.run import COMPAT, DEFAULT_PROMPT, GREEDY, AblationError, Settings, run_ablation, write_answers
from ..data.samples import SampleError, read_samples
from ..hooks.deactivate import DeactivationError
from ..models.sites import SiteError
from ..selection import Selection, SelectionError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = Settings()
    parser = subparsers.add_parser(
        "ablate",
        help="VQA answers of one domain with a condition's neurons deactivated (JSONL)",
        description="Conditions: none, a site (lm), sites joined by '+' (qformer+query), or all. The domain is "
        "the samples'; its own neurons are deactivated unless --source-domain names another.",
    )
    parser.add_argument("--model", required=True, type=Path, help="model folder (save_pretrained)")
    parser.add_argument("--neurons", required=True, type=Path, help="neurons.json of `mmneuron select`")
    parser.add_argument("--data", required=True, type=Path, metavar="PARQUET", help="evaluation samples of one domain")
    parser.add_argument("--condition", required=True, help="sites to deactivate: none, all, SITE or SITE+SITE...")
    parser.add_argument(
        "--random-seed",
        type=int,
        help="random control: as many random neurons per site and layer, drawn with this seed",
    )
    parser.add_argument("--source-domain", help="deactivate this domain's neurons (cross-domain matrix)")
    parser.add_argument("--out", required=True, type=Path, help="answers JSONL to write")
    parser.add_argument(
        "--prompt",
        default=DEFAULT_PROMPT,
        help="prompt template: {question}, {options} and meta fields; one <image> (default %(default)r)",
    )
    parser.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn of the chat template")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument(
        "--decoding",
        choices=(GREEDY, COMPAT),
        default=GREEDY,
        help="greedy, or compat: sampling at --temperature like the authors, seeded by --seed",
    )
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of compat sampling")
    parser.add_argument("--value", type=float, default=defaults.value, help="output of a deactivated neuron")
    parser.add_argument(
        "--no-likelihood",
        dest="likelihood",
        action="store_false",
        help="skip the reference answer's teacher-forced log-likelihood",
    )
    parser.add_argument("--limit", type=int, help="first N samples only")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype", default="auto", help="auto (bfloat16 on a GPU, else float32), float32, bfloat16, float16"
    )
    parser.add_argument("--name", help="model name recorded in the answers (default: the neuron file's)")
    parser.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's choice)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (AblationError, ConditionError, SampleError, SelectionError) as error:
        raise SystemExit(f"mmneuron ablate: {error}") from None


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..models.loading import ModelLoadError, load_model  # here: every mmneuron command imports this module

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(
        prompt=args.prompt,
        chat=args.chat,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        decoding=args.decoding,
        temperature=args.temperature,
        seed=args.seed,
        likelihood=args.likelihood,
        value=args.value,
    )
    condition = Condition(args.condition, args.random_seed, args.source_domain)
    selection = Selection.load(args.neurons)
    samples = read_samples(args.data, args.limit)
    if not samples:
        raise AblationError(f"{args.data}: no samples")
    try:
        model, processor = load_model(args.model, args.device, args.dtype)
    except ModelLoadError as error:
        raise AblationError(str(error)) from None
    try:
        records, skipped = run_ablation(
            model, processor, samples, selection, condition, settings, args.name or selection.model
        )
    except (AblationError, ConditionError, DeactivationError, LikelihoodError, SiteError) as error:
        raise AblationError(f"{args.data} with {args.neurons}: {error}") from None
    write_answers(records, args.out)
    deactivated = records[0]["deactivated"] if records else 0
    log.info(
        "%s: %d answer(s) under condition %s (%s, %d neuron(s) deactivated); %d sample(s) skipped",
        args.out,
        len(records),
        condition.name,
        condition.control,
        deactivated,
        len(skipped),
    )
    return 0
