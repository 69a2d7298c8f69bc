"""Overhead of activation recording: bare forward passes vs the same passes with mmneuron's hooks.

    python -m benchmarks.recording                                  # demo architecture, untrained
    python -m benchmarks.recording --model llava7b:2 --batch-size 1 --batches 1 --repeats 2 --warmup 0
    python -m benchmarks.recording --model results/models/demo --data data/com/stats.parquet

Every variant runs the same prepared batches (the prompts, images and processing are prepared once
and not timed); each repeat runs all batches once per variant, the variants alternating. Recording
covers building the position masks, the hooks and the counting: counts only, or counts and the
activation moments (sums, sums of squares, maxima), with the results read back to the CPU at the end
of each run, as an extraction does. The table gives the median, min and max seconds of one run over
all batches and the ratio of the medians to the bare forward's.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks import common
from mmneuron.data.samples import decode_image, read_samples
from mmneuron.defaults import STATS_PROMPT
from mmneuron.hooks.record import ActivationRecorder
from mmneuron.models.inputs import RIGHT, build_prompt, encode, forward_options, position_masks
from mmneuron.models.sites import resolve_sites


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_arguments(parser, repeats=7)
    parser.add_argument("--batch-size", type=int, default=8, help="samples per batch (default %(default)s)")
    parser.add_argument("--batches", type=int, default=4, help="batches per run (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per variant (default %(default)s)")
    parser.add_argument("--data", help="samples parquet (default: synthetic 'com' samples)")
    args = parser.parse_args(argv)
    common.setup(args)

    model, processor = common.load(args.model, args.device, args.dtype)
    count = args.batch_size * args.batches
    samples = read_samples(args.data, limit=count) if args.data else common.samples(model, count)
    sites = resolve_sites(model)
    model_type = model.config.model_type
    batches = []
    for start in range(0, len(samples), args.batch_size):
        chunk = samples[start : start + args.batch_size]
        prompts = [build_prompt(processor, model_type, STATS_PROMPT, sample) for sample in chunk]
        batches.append(encode(model, processor, [decode_image(sample) for sample in chunk], prompts, RIGHT).inputs)
    options = forward_options(model)

    def bare():
        for inputs in batches:
            model(**inputs, **options)

    def recorded(moments: bool):
        def step():
            with ActivationRecorder(sites, moments=moments) as recorder:
                for inputs in batches:
                    recorder.set_masks(position_masks(model, inputs, sites))
                    model(**inputs, **options)
                recorder.results()
                if moments:
                    recorder.moment_results()

        return step

    variants = {"bare forward": bare, "+ counts": recorded(False), "+ counts and moments": recorded(True)}
    with torch.inference_mode():
        times = common.alternate(variants, args.repeats, model.device, warmup=args.warmup)

    rows = common.timing_rows(times, "bare forward", slowdown=True)
    setting = {
        "model": f"{args.model} ({model_type})",
        "dtype": str(model.dtype).removeprefix("torch."),
        "batches": f"{len(batches)} x {args.batch_size}",
        "LM positions": sum(int(inputs["attention_mask"].sum()) for inputs in batches),
        "sites": " ".join(f"{site.name} {site.layers}x{site.width}" for site in sites),
        "repeats": args.repeats,
        "warm-up runs": args.warmup,
    }
    common.report("recording", setting, rows, model.device, args.results)


if __name__ == "__main__":
    main()
