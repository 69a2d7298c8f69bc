"""The logit lens: mmneuron's (one layer and ``chunk_size`` positions unembedded at a time) vs a
naive all-layers unembedding, at two depths of the language model.

The naive lens is what one writes first: one forward with ``output_hidden_states=True``, every
layer's hidden states stacked, the final norm (the last layer's states come out of the model
already normed) and the lm_head applied to all layers and positions at once, then the softmax, the
entropy and the top token. Both variants get the same right-padded batch and keep the same
per-scope summaries; the run checks that they agree (per layer and position: the top token, its
probability and the entropy) and measures each variant's time and peak memory above the memory in
use before it. On the CPU the peak is the process's resident set, with glibc's mmap
threshold fixed at 128 KiB (every tensor its own mapping, unmapped when freed) and the heap's free
pages given back (malloc_trim) before each run, so that neither variant's peak can hide in memory
the other one, or an earlier run, left behind; on a GPU it is torch's peak allocated. The
variants alternate run by run (after the agreement check, which is their warm-up); each run is
timed and its peak measured (reset before it, read after it), and the median peak counts.

The target: mmneuron's peak should not depend on the depth (within 5% between the two depths),
while the naive one grows with it.

    python -m benchmarks.lens --model demo --depths 4,16
    python -m benchmarks.lens --model llava7b --depths 2,4 --samples 1 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks import common
from mmneuron.data.samples import decode_images
from mmneuron.defaults import LENS
from mmneuron.lens import logit_lens
from mmneuron.models.decoder import final_norm_and_unembed
from mmneuron.models.inputs import RIGHT, build_prompt, encode, forward_options, scope_masks

MIB = 2**20
MMNEURON, NAIVE = "mmneuron", "naive"
DEFAULT_DEPTHS = {"demo": "4,16", "llava7b": "2,4"}


@torch.no_grad()
def naive_lens(model, inputs, masks):
    """Every layer's lens at once: per scope the entropy sums and top-token counts per layer, and
    the (layers x positions) entropy, top probability and top token at the counted positions."""
    norm, head = final_norm_and_unembed(model)
    out = model(**inputs, output_hidden_states=True, **forward_options(model))
    stacked = torch.stack(out.hidden_states[1:])  # layers x batch x seq x hidden
    # transformers 5: the last entry is the final norm's output already
    normed = torch.cat([norm(stacked[:-1]), stacked[-1:]])
    logp = torch.log_softmax(head(normed).float(), dim=-1)  # layers x batch x seq x vocab
    p = logp.exp()
    entropy = -torch.where(p > 0, p * logp, 0.0).sum(-1)
    top_prob, top_id = p.max(-1)
    union = torch.zeros_like(next(iter(masks.values())))
    for mask in masks.values():
        union |= mask
    summaries = {
        name: (entropy[:, mask].double().sum(1), [torch.unique(ids, return_counts=True) for ids in top_id[:, mask]])
        for name, mask in masks.items()
    }
    return summaries, entropy[:, union], top_prob[:, union], top_id[:, union]


def prepared(model, processor, n: int):
    samples = common.samples(model, n)
    kept, images, skipped = decode_images(samples)
    if skipped:
        raise RuntimeError(f"{len(skipped)} samples skipped: {skipped[:3]}")
    arch = model.config.model_type
    prompts = [build_prompt(processor, arch, LENS.prompt, sample, LENS.chat) for sample in kept]
    inputs = encode(model, processor, images, prompts, RIGHT).inputs
    masks = {name: mask.to(model.device) for name, mask in scope_masks(model, inputs).items()}
    return inputs, masks


def measured_run(device: torch.device, step) -> tuple[float, int]:
    """The seconds ``step()`` takes and the bytes it needs above what is in use before it."""
    base = common.reset_peak(device)
    seconds = common.timed(device, step)
    return seconds, common.peak_bytes(device) - base


def agreement(model, inputs, masks, chunk_size: int) -> dict:
    """How closely the two variants agree at every counted position and layer."""
    union = torch.zeros_like(next(iter(masks.values())))
    for mask in masks.values():
        union |= mask
    positions = [tuple(map(int, p)) for p in union.nonzero().tolist()]  # row-major, as the lens counts them
    stats, trace = logit_lens(model, inputs, masks, chunk_size=chunk_size, trace=positions)
    summaries, _, top_prob, top_id = naive_lens(model, inputs, masks)
    ids = torch.as_tensor(trace.ids)
    probs = torch.as_tensor(trace.probs)
    same_top = (ids == top_id.cpu()).float().mean().item()
    prob_diff = (probs - top_prob.cpu().double()).abs().max().item()
    entropy_diff = 0.0
    for name, (sums, _) in summaries.items():
        mine = torch.as_tensor(stats[name].entropy_sum)
        counted = torch.as_tensor(stats[name].n).clamp(min=1)
        entropy_diff = max(entropy_diff, ((mine - sums.cpu()).abs() / counted).max().item())
    tolerance = 1e-3 if model.dtype == torch.float32 else 5e-2
    return {
        "same_top": same_top,
        "top_prob_diff": prob_diff,
        "entropy_mean_diff": entropy_diff,
        "agree": same_top >= 0.999 and prob_diff < tolerance and entropy_diff < tolerance,
    }


def measure_depth(args: argparse.Namespace, depth: int):
    """At one depth: the device, the agreement check, per variant (time summary, median peak bytes),
    and the positions in the batch."""
    model, processor = common.load(args.model.partition(":")[0], args.device, args.dtype, text_layers=depth)
    device = model.device
    inputs, masks = prepared(model, processor, args.samples)
    variants = {
        MMNEURON: lambda: logit_lens(model, inputs, masks, chunk_size=args.chunk_size),
        NAIVE: lambda: naive_lens(model, inputs, masks),
    }
    # the check runs both variants first: the warm-up, so that one-time allocations are not counted
    check = agreement(model, inputs, masks, args.chunk_size)
    print(f"depth {depth}: {check}", flush=True)
    times, measured = {name: [] for name in variants}, {name: [] for name in variants}
    for _ in range(args.repeats):  # alternating; each run timed and its peak measured
        for name, step in variants.items():
            seconds, peak = measured_run(device, step)
            times[name].append(seconds)
            measured[name].append(peak)
    per_run = {name: [round(value / MIB, 2) for value in values] for name, values in measured.items()}
    print(f"depth {depth}: peak MiB per run {per_run}", flush=True)
    result = {name: (common.summary(times[name]), statistics.median(measured[name])) for name in variants}
    return device, check, result, int(inputs["attention_mask"].sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lens", description=__doc__.split("\n\n")[0])
    common.add_arguments(parser, repeats=3)
    parser.add_argument("--depths", help="two language model depths, e.g. 4,16 (default: demo 4,16; llava7b 2,4)")
    parser.add_argument("--samples", type=int, default=16, help="samples in the batch (default %(default)s)")
    parser.add_argument(
        "--chunk-size", type=int, default=LENS.chunk_size, help="mmneuron's positions per unembedding (%(default)s)"
    )
    args = parser.parse_args(argv)
    common.setup(args)
    common.exact_cpu_peaks()
    base = args.model.partition(":")[0]
    depths = [int(d) for d in (args.depths or DEFAULT_DEPTHS.get(base, "")).split(",") if d]
    if len(depths) < 2:
        raise SystemExit("give two depths with --depths, e.g. --depths 4,16")

    results, checks = {}, {}
    for depth in depths:
        device, checks[depth], results[depth], positions = measure_depth(args, depth)

    first, last = depths[0], depths[-1]
    rows = []
    for depth in depths:
        for name in (MMNEURON, NAIVE):
            stats, peak = results[depth][name]
            rows.append(
                {
                    "depth": depth,
                    "variant": name,
                    "median s": stats["median"],
                    "min": stats["min"],
                    "max": stats["max"],
                    "peak MiB": peak / MIB,
                    f"peak / depth {first}": peak / max(results[first][name][1], 1),
                }
            )
    ratios = {name: results[last][name][1] / max(results[first][name][1], 1) for name in (MMNEURON, NAIVE)}
    flat = abs(ratios[MMNEURON] - 1) <= 0.05
    print(
        f"peak ratio depth {last} / depth {first}: mmneuron {ratios[MMNEURON]:.3f}, naive {ratios[NAIVE]:.3f}; "
        f"mmneuron's peak {'is' if flat else 'is NOT'} independent of depth within 5%"
    )
    setting = {
        "model": base,
        "depths": depths,
        "samples": args.samples,
        "positions": positions,
        "chunk_size": args.chunk_size,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "agree": all(check["agree"] for check in checks.values()),
        "checks": {str(depth): check for depth, check in checks.items()},
        "mmneuron_flat_within_5pct": flat,
    }
    common.report("lens", setting, rows, device, args.results)


if __name__ == "__main__":
    main()
