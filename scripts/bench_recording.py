"""Overhead of activation recording: bare forward passes vs the same passes with recording.

    python scripts/bench_recording.py                          # demo architecture, untrained, synthetic samples
    python scripts/bench_recording.py --model results/models/demo --data data/com/stats.parquet
    python scripts/bench_recording.py --model tiny:llava_next

Both variants run the same prepared batches (processing is not timed); each repeat times all
batches once per variant, alternating; the table gives the median over repeats and the ratio.
Recording covers building the position masks, the hooks and the counting: counts only, or counts
and the activation moments (sums, sums of squares, maxima).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmneuron.data import synthetic
from mmneuron.data.samples import decode_image, read_samples
from mmneuron.defaults import STATS_PROMPT
from mmneuron.hooks.record import ActivationRecorder
from mmneuron.models.demo import build_demo_model, build_demo_processor
from mmneuron.models.inputs import RIGHT, build_prompt, encode, forward_options, position_masks
from mmneuron.models.loading import load_model, resolve_device, resolve_dtype
from mmneuron.models.sites import resolve_sites
from mmneuron.models.tiny import build_tiny


def _model(name: str, device: str, dtype: str):
    if name == "demo" or name.startswith("tiny:"):
        model, processor = (
            (build_demo_model(build_demo_processor(synthetic.vocabulary())), None)
            if name == "demo"
            else build_tiny(name.removeprefix("tiny:"))
        )
        processor = processor or build_demo_processor(synthetic.vocabulary())
        target = resolve_device(device)
        return model.to(target, resolve_dtype(dtype, target)).eval(), processor
    return load_model(name, device=device, dtype=dtype)


def _timed(model, step) -> float:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    start = time.perf_counter()
    step()
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo (default), tiny:ARCH, or a model folder / id")
    parser.add_argument("--data", help="samples parquet (default: synthetic 'com' samples)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model, processor = _model(args.model, args.device, args.dtype)
    count = args.batch_size * args.batches
    samples = read_samples(args.data, limit=count) if args.data else synthetic.generate("com", "stats", count)
    sites = resolve_sites(model)
    model_type = model.config.model_type
    batches = []
    for start in range(0, len(samples), args.batch_size):
        chunk = samples[start : start + args.batch_size]
        prompts = [build_prompt(processor, model_type, STATS_PROMPT, s) for s in chunk]
        batches.append(encode(model, processor, [decode_image(s) for s in chunk], prompts, RIGHT).inputs)
    options = forward_options(model)

    def bare():
        for inputs in batches:
            model(**inputs, **options)

    def recorded(moments):
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
    times = {variant: [] for variant in variants}
    with torch.inference_mode():
        for step in variants.values():  # warm-up
            step()
        for _ in range(args.repeats):
            for variant, step in variants.items():
                times[variant].append(_timed(model, step))

    positions = sum(int(inputs["attention_mask"].sum()) for inputs in batches)
    print(
        f"model {args.model} ({model_type}, {model.device}, {str(model.dtype).removeprefix('torch.')}), "
        f"{len(batches)} batches of {args.batch_size}, {positions} LM positions, "
        f"sites {', '.join(f'{s.name} {s.layers}x{s.width}' for s in sites)}, {args.repeats} repeats, "
        f"{torch.get_num_threads()} threads"
    )
    base = statistics.median(times["bare forward"])
    print(f"| {'variant':<20} | {'median s':>9} | {'ms / batch':>10} | {'ratio':>6} |")
    print(f"|{'-' * 22}|{'-' * 11}|{'-' * 12}|{'-' * 8}|")
    for variant, values in times.items():
        median = statistics.median(values)
        print(f"| {variant:<20} | {median:>9.4f} | {1000 * median / len(batches):>10.2f} | {median / base:>6.3f} |")


if __name__ == "__main__":
    main()
