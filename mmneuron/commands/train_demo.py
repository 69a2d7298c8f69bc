"""``mmneuron train-demo``: build, train, evaluate and save the demo model."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mmneuron.defaults import DEMO_MODEL, RUN

from . import positive_int, read_samples_files

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train-demo", help="train the demo model on the synthetic domains")
    parser.add_argument("--train", nargs="+", type=Path, required=True, help="training samples files")
    parser.add_argument("--eval", nargs="+", type=Path, required=True, help="held-out samples files")
    parser.add_argument("--out", type=Path, required=True, help="model folder (save_pretrained)")
    parser.add_argument("--steps", type=positive_int, default=DEMO_MODEL.steps)
    parser.add_argument("--batch-size", type=positive_int, default=DEMO_MODEL.batch_size)
    parser.add_argument("--learning-rate", type=float, default=DEMO_MODEL.learning_rate)
    parser.add_argument("--warmup-steps", type=int, default=DEMO_MODEL.warmup_steps)
    parser.add_argument("--eval-batch-size", type=positive_int, default=DEMO_MODEL.eval_batch_size)
    parser.add_argument("--seed", type=int, default=RUN.seed)
    parser.add_argument("--threads", type=positive_int, help="CPU threads (default: torch's choice)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from mmneuron.data import synthetic
    from mmneuron.models.demo import build_demo_model, build_demo_processor
    from mmneuron.models.train_demo import TrainSettings, evaluate, train

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = TrainSettings(args.steps, args.batch_size, args.learning_rate, args.warmup_steps, args.seed)
    train_samples = read_samples_files(args.train, None, "--train")
    eval_samples = read_samples_files(args.eval, None, "--eval")
    processor = build_demo_processor(synthetic.vocabulary())
    model = build_demo_model(processor, seed=args.seed)
    summary = train(model, processor, train_samples, settings)
    accuracy = evaluate(model, processor, eval_samples, batch_size=args.eval_batch_size)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    report = {
        **accuracy,
        **summary,
        "settings": vars(settings),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_samples": len(train_samples),
        "threads": torch.get_num_threads(),
    }
    (args.out / "accuracy.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    log.info("held-out accuracy %.3f overall; %s", accuracy["overall"], accuracy["by_domain"])
    return 0
