"""Cost of one demo-model training step: SDPA vs eager attention, logits everywhere vs at the answer.

    python -m benchmarks.training                       # one prepared batch of 32, 2 threads
    python -m benchmarks.training --threads 1 --repeats 20

Every variant runs the same prepared batch of the untrained demo model (forward and backward,
no optimizer step); each repeat times one batch per variant, alternating, and the table gives the
median seconds per step over repeats and the ratio to the first row. Training uses eager
attention and logits at the answer positions.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmneuron.data import synthetic
from mmneuron.models.demo import build_demo_model, build_demo_processor
from mmneuron.models.train_demo import IGNORE, _left_pad, answer_loss, encode_training_samples

# (attention, logits_to_keep): 0 = logits at every position, None = at the answer positions only
VARIANTS = (("sdpa", 0), ("sdpa", None), ("eager", 0), ("eager", None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    processor = build_demo_processor(synthetic.vocabulary())
    model = build_demo_model(processor)
    per_domain = -(-args.batch_size // len(synthetic.DOMAINS))
    samples = [s for d in synthetic.DOMAINS for s in synthetic.generate(d, "bench", per_domain)][: args.batch_size]
    encoded = encode_training_samples(model, processor, samples)
    pad = processor.tokenizer.pad_token_id
    batch = (
        _left_pad(encoded.input_ids, pad),
        _left_pad(encoded.labels, IGNORE),
        encoded.pixel_values,
        encoded.image_sizes,
    )

    def step(attention: str, logits_to_keep: int | None) -> float:
        model.set_attn_implementation(attention)
        started = time.perf_counter()
        answer_loss(model, *batch, pad, logits_to_keep=logits_to_keep).backward()
        elapsed = time.perf_counter() - started
        model.zero_grad(set_to_none=True)
        return elapsed

    for variant in VARIANTS:  # warm-up
        step(*variant)
    times = {variant: [] for variant in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            times[variant].append(step(*variant))

    base = statistics.median(times[VARIANTS[0]])
    print(f"batch {args.batch_size}, {args.repeats} repeats, {args.threads} threads, torch {torch.__version__}")
    print("| attention | logits | s/step (median) | ratio |")
    print("|---|---|---|---|")
    for (attention, logits_to_keep), values in times.items():
        median = statistics.median(values)
        where = "every position" if logits_to_keep == 0 else "answer positions"
        print(f"| {attention} | {where} | {median:.4f} | {median / base:.3f} |")


if __name__ == "__main__":
    main()
