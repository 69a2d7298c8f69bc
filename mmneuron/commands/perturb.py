"""``mmneuron perturb``: how far deactivation moves each LLM layer's hidden states, per domain.

One job per model: every condition (and its random controls) over every domain's samples, one
clean forward per batch shared by all conditions.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..ablation.conditions import NONE, Condition, ConditionError
from ..ablation.run import DEFAULT_PROMPT, AblationError
from ..data.samples import SampleError, read_samples
from ..hooks.deactivate import DeactivationError
from ..models.sites import SiteError
from ..perturbation import PerturbationError, run_perturbation
from ..selection import Selection, SelectionError
from . import key_values

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "perturb",
        help="hidden-state perturbation under deactivation: per LLM layer, cosine and relative L2 against the clean "
        "run",
        description="Conditions: none, a site (lm), sites joined by '+' (qformer+query), or all; each domain's own "
        "neurons are deactivated, and with --random-seeds also as many random neurons per site and layer. "
        "Outputs not named go beside --out: {stem}_summary.json.",
    )
    parser.add_argument("--model", required=True, type=Path, help="model folder (save_pretrained)")
    parser.add_argument("--neurons", required=True, type=Path, help="neurons.json of `mmneuron select`")
    parser.add_argument(
        "--data",
        nargs="+",
        required=True,
        type=Path,
        metavar="PARQUET",
        help="samples files; the domain comes from each sample",
    )
    parser.add_argument(
        "--conditions",
        nargs="+",
        required=True,
        metavar="NAME",
        help="sites to deactivate per condition: none, all, SITE or SITE+SITE...",
    )
    parser.add_argument(
        "--random-seeds",
        nargs="*",
        type=int,
        default=[],
        metavar="SEED",
        help="random controls of every condition but none, one per seed",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="tidy CSV: one row per condition, control, domain, scope and layer"
    )
    parser.add_argument("--summary", type=Path, help="JSON: settings, samples, neurons deactivated, skipped samples")
    parser.add_argument("--figures", type=Path, help="folder for the figures (PNG and PDF); none if omitted")
    parser.add_argument("--limit", type=int, help="samples per file (default: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--prompt",
        default=DEFAULT_PROMPT,
        help="prompt template: {question}, {options} and meta fields; one <image> (default %(default)r)",
    )
    parser.add_argument(
        "--prompts",
        nargs="*",
        default=[],
        metavar="DOMAIN=TEMPLATE",
        help="a domain's own prompt template instead of --prompt",
    )
    parser.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn of the chat template")
    parser.add_argument("--value", type=float, default=0.0, help="output of a deactivated neuron")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype", default="auto", help="auto (bfloat16 on a GPU, else float32), float32, bfloat16, float16"
    )
    parser.add_argument("--name", help="model name recorded in the outputs (default: the neuron file's)")
    parser.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's choice)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (
        AblationError,
        ConditionError,
        DeactivationError,
        PerturbationError,
        SampleError,
        SelectionError,
        SiteError,
    ) as error:
        raise SystemExit(f"mmneuron perturb: {error}") from None


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..models.loading import ModelLoadError, load_model  # here: every mmneuron command imports this module

    if args.threads:
        torch.set_num_threads(args.threads)
    conditions = [Condition(name) for name in args.conditions]
    conditions += [Condition(name, seed) for name in args.conditions if name != NONE for seed in args.random_seeds]
    prompts = key_values(args.prompts, "--prompts", "DOMAIN=TEMPLATE", "perturb")
    selection = Selection.load(args.neurons)
    samples = [s for path in args.data for s in read_samples(path, args.limit)]
    if not samples:
        raise PerturbationError(f"no samples in {[str(p) for p in args.data]}")
    try:
        model, processor = load_model(args.model, args.device, args.dtype)
    except ModelLoadError as error:
        raise PerturbationError(str(error)) from None
    name = args.name or selection.model
    try:
        result = run_perturbation(
            model,
            processor,
            samples,
            selection,
            conditions,
            args.prompt,
            prompts,
            args.chat,
            args.batch_size,
            args.value,
            name,
        )
    except (AblationError, ConditionError, DeactivationError, SiteError) as error:
        raise PerturbationError(f"{args.neurons}: {error}") from None
    table = result.table()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    summary = args.summary or args.out.with_name(f"{args.out.stem}_summary.json")
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(
        json.dumps(
            {
                "model": name,
                "neurons": str(args.neurons),
                "settings": result.settings,
                "conditions": [
                    {
                        "condition": c.name,
                        "control": c.control,
                        "seed": c.seed,
                        "deactivated": {d: n for (cc, d), n in result.deactivated.items() if cc == c},
                    }
                    for c in conditions
                ],
                "samples": dict(result.samples),
                "skipped": result.skipped,
            },
            indent=1,
            ensure_ascii=False,
        )
    )
    if args.figures:
        from ..plots.perturbation import plot_all

        plot_all(table, args.figures, title=name)
    log.info(
        "perturbation of %d condition(s) over %d sample(s) of %d domain(s); %d skipped (corrupt images)",
        len(conditions),
        sum(result.samples.values()),
        len(result.samples),
        len(result.skipped),
    )
    return 0
