"""`mmneuron train-demo`: build, train, evaluate and save the demo model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from mmneuron.data import synthetic
from mmneuron.data.samples import read_samples
from mmneuron.models.demo import build_demo_model, build_demo_processor
from mmneuron.models.train_demo import TrainSettings, evaluate, train

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train-demo", help="train the demo model on the synthetic domains")
    parser.add_argument("--train", nargs="+", type=Path, required=True, help="training samples files")
    parser.add_argument("--eval", nargs="+", type=Path, required=True, help="held-out samples files")
    parser.add_argument("--out", type=Path, required=True, help="model folder (save_pretrained)")
    defaults = TrainSettings()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.set_defaults(func=run)


def run(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = TrainSettings(args.steps, args.batch_size, args.learning_rate, args.warmup_steps, args.seed)
    train_samples = [s for path in args.train for s in read_samples(path)]
    eval_samples = [s for path in args.eval for s in read_samples(path)]
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
