"""``mmneuron lens``: the logit lens per domain, its three stages, examples and figures."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from mmneuron.defaults import LENS

from . import add_model_arguments, add_samples_arguments, load_model, positive_int, read_samples_files, share

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lens",
        help="logit lens: entropy of each LLM layer's decoded distribution, per domain and token scope",
        description="Outputs not named go beside --out: {stem}_stages.csv and {stem}_examples.json.",
    )
    add_model_arguments(parser, name_default="the model folder's name")
    add_samples_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="tidy CSV: one row per domain, scope and layer")
    parser.add_argument("--examples", type=Path, help="JSON of per-sample top tokens per layer")
    parser.add_argument("--stages", type=Path, help="CSV of the stage boundaries per domain")
    parser.add_argument("--figures", type=Path, help="folder for the figures (PNG and PDF); none if omitted")
    parser.add_argument("--batch-size", type=positive_int, default=LENS.batch_size)
    parser.add_argument(
        "--chunk-size",
        type=positive_int,
        default=LENS.chunk_size,
        help="positions decoded at once (memory: chunk x vocabulary logits)",
    )
    parser.add_argument(
        "--prompt", default=LENS.prompt, help="prompt template: {question}, {options}, meta fields; at most one <image>"
    )
    parser.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=LENS.chat,
        help="wrap the prompt as a user turn of the chat template",
    )
    parser.add_argument("--examples-per-domain", type=int, default=2)
    parser.add_argument("--top-tokens", type=positive_int, default=5, help="most frequent top tokens listed per row")
    rule = LENS.stages
    parser.add_argument(
        "--start-fraction",
        type=share,
        default=rule.start_fraction,
        help="stage rule: share of the entropy fall that starts processing (default %(default)s)",
    )
    parser.add_argument(
        "--min-rise",
        type=share,
        default=rule.min_rise,
        help="stage rule: final rise, as a share of the fall, for token selection (default %(default)s)",
    )
    parser.add_argument(
        "--flat-tolerance",
        type=share,
        default=rule.flat_tolerance,
        help="stage rule: change, as a share of the largest entropy, treated as none (default %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.lens import run_lens
    from mmneuron.plots.lens import plot_all
    from mmneuron.stages import StageRule, stage_table

    rule = StageRule(args.start_fraction, args.min_rise, args.flat_tolerance)
    samples = read_samples_files(args.data, args.limit, "--data")
    name = args.name or Path(args.model).name
    model, processor = load_model(args)
    result = run_lens(
        model,
        processor,
        samples,
        args.prompt.replace("\\n", "\n"),
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        chat=args.chat,
        examples_per_domain=args.examples_per_domain,
        model_name=name,
    )
    table = result.accumulator.table(processor.tokenizer, top_tokens=args.top_tokens)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    stages = stage_table(table, "image", rule)
    stages.insert(0, "model", name)
    stages.to_csv(args.stages or args.out.with_name(f"{args.out.stem}_stages.csv"), index=False)
    examples_path = args.examples or args.out.with_name(f"{args.out.stem}_examples.json")
    examples_path.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": name,
        "settings": {**result.settings, "stage_rule": asdict(rule)},
        "samples": dict(result.accumulator.samples),
        "skipped": result.skipped,
        "examples": result.examples,
    }
    examples_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    if args.figures:
        plot_all(table, result.examples, args.figures, rule, title=name)
    for row in stages.itertuples():
        log.info("%s: %s", row.domain, row.note)
    log.info(
        "lens over %d sample(s) of %d domain(s); %d skipped (corrupt images)",
        sum(result.accumulator.samples.values()),
        len(result.accumulator.samples),
        len(result.skipped),
    )
    return 0
