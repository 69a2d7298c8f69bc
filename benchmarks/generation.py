"""Deactivation generation: batched greedy answers vs one sample at a time.

The same samples, the same neuron set (a random ``--rate`` of every layer of the ``lm`` site's
neurons, condition ``lm``) and the same decoding (greedy, ``--max-new-tokens``) are answered by
:func:`mmneuron.ablation.run.run_ablation` at ``--batch-size`` and at batch size 1, alternating
repeat by repeat. Batches are left-padded, so greedy answers should not depend on the batch: the
run prints how many of the samples got the same answer both ways (and lists those that did not).

    python -m benchmarks.generation --model demo
    python -m benchmarks.generation --model llava7b:2 --samples 4 --batch-size 4 --repeats 1
"""

from __future__ import annotations

import argparse

from benchmarks import common
from mmneuron.ablation.run import Settings, run_ablation
from mmneuron.conditions import Condition

SITE = "lm"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generation", description=__doc__.split("\n\n")[0])
    common.add_arguments(parser, repeats=3)
    parser.add_argument("--samples", type=int, default=16, help="samples answered (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="the batched variant's batch size (%(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="greedy tokens per answer (default %(default)s)")
    parser.add_argument("--rate", type=float, default=0.01, help="share of the lm neurons deactivated (%(default)s)")
    parser.add_argument("--text-layers", type=int, help="the demo's language model depth (default: the demo's)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each variant first (%(default)s)")
    args = parser.parse_args(argv)
    common.setup(args)

    model, processor = common.load(args.model, args.device, args.dtype, text_layers=args.text_layers)
    device = model.device
    samples = common.samples(model, args.samples)
    domain = samples[0].domain
    selection = common.lm_selection(model, domain, args.rate)
    neurons = selection.sites[SITE].selected
    conditions = [Condition(SITE)]
    chat = bool(getattr(processor, "chat_template", None))  # the 7B geometry's processor comes without one

    answers: dict[str, list[str]] = {}

    def variant(name: str, batch_size: int):
        settings = Settings(batch_size=batch_size, max_new_tokens=args.max_new_tokens, likelihood=False, chat=chat)

        def step() -> None:
            records, skipped = run_ablation(
                model, processor, samples, selection, conditions, settings, args.model, progress=False
            )
            if skipped:
                raise RuntimeError(f"{len(skipped)} samples skipped: {skipped[:3]}")
            answers[name] = [record["prediction"] for record in records]

        return step

    batched, single = f"batched ({args.batch_size})", "one at a time"
    times = common.alternate(
        {batched: variant(batched, args.batch_size), single: variant(single, 1)}, args.repeats, device, args.warmup
    )

    same = [a == b for a, b in zip(answers[batched], answers[single])]
    print(f"answers: {sum(same)} of {len(same)} the same batched and one at a time")
    for sample, a, b, ok in zip(samples, answers[batched], answers[single], same):
        if not ok:
            print(f"  differs: {sample.sample_id}: batched {a!r} vs one at a time {b!r}")

    rows = common.timing_rows(times, single, len(samples))
    setting = {
        "model": args.model,
        "text_layers": args.text_layers,
        "samples": len(samples),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "neurons": len(neurons),
        "condition": SITE,
        "chat": chat,
        "dtype": str(model.dtype).removeprefix("torch."),
        "repeats": args.repeats,
        "same_answers": f"{sum(same)}/{len(same)}",
    }
    common.report("generation", setting, rows, device, args.results)


if __name__ == "__main__":
    main()
