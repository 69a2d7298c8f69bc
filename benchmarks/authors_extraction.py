"""Extraction as the MMNeuron authors ran it vs mmneuron's, on the same model and samples, with a
check that both count the same.

    python -m benchmarks.authors_extraction                         # demo architecture, untrained
    python -m benchmarks.authors_extraction --model llava7b:2 --samples 2 --batch-size 2 --repeats 1 --warmup 0

The authors' way (the method as the project's SPEC.md states it, section 3): one sample at a time
(batch size 1), in float32, every site, counting by *replacing* the forward of each site's MLP (the
activation module's parent: LLaMA's gated MLP, CLIP's MLP, the projector) with one that computes the
activation, adds ``(activation > 0)`` summed over all positions to a per-layer counter, and returns
the MLP's usual output. No hooks, no masks: every position a module sees is counted. (This is our
own rendering of the method, not the authors' code.)

Ours: :func:`mmneuron.extract.extract_counts`, batched at ``--batch-size`` (right padding, padding
masked out of every count), in the run's dtype (``--dtype``; auto: float32 on the CPU, bfloat16 on a
GPU), with ``anyres_padding="count"``.

Which positions. With batch size 1 there is no padding, so the authors count every position of the
prompt in the language model (image and text tokens), every position of every tile in the vision
tower (CLS and patches) and every patch of every tile in the projector, LLaVA-NeXT's anyres tile
padding included. Ours counts, for scope ``all``, the real (unpadded) positions of the language
model, the same set; at the vision and projector sites it leaves the anyres padding out by default,
so this benchmark runs it with ``anyres_padding="count"`` (the authors' behaviour; the default costs
the same: one mask per batch either way), and the two definitions coincide at every site. Both run
the statistics prompt ``<image>\\n{question}`` with no chat template and one prefill forward per
prompt without a cache, computing only the last position's logits; the authors also counted the
tokens their code generated, which is not reproduced here. Each variant includes building the
prompts, decoding the images and the processor, as an extraction does.

The check: the counts of active positions (scope ``all``, every site, layer and neuron) and the
numbers of positions counted must be equal. When ours runs in another dtype than float32, its timed
counts cannot equal float32 ones, so an extra untimed run of ours in float32 (same batch size) is
what is checked. The process exits with status 1 when they differ.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence

import torch
from torch import nn

from benchmarks import common
from mmneuron.counts import Counts
from mmneuron.data.samples import decode_image, read_samples
from mmneuron.defaults import STATS_PROMPT
from mmneuron.extract import extract_counts
from mmneuron.models.inputs import build_prompt, forward_options
from mmneuron.models.loading import resolve_device, resolve_dtype
from mmneuron.models.sites import ResolvedSite, resolve_sites

AUTHORS = "authors' way"
OURS = "mmneuron"


def _counting_forward(mlp: nn.Module, activation_name: str, active: torch.Tensor, tokens: torch.Tensor, layer: int):
    """A forward for ``mlp`` that adds the positions with activation > 0 to ``active[layer]`` (per
    neuron) and the positions seen to ``tokens[layer]``, and returns what the MLP's own forward does."""
    act = getattr(mlp, activation_name)

    def count(activation: torch.Tensor) -> None:
        positions = tuple(range(activation.dim() - 1))  # batch (or tiles) and sequence: every position
        active[layer] += (activation > 0).sum(dim=positions).to(active.device)
        tokens[layer] += activation.numel() // activation.shape[-1]

    if all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj")):  # LLaMA: down(act(gate) * up)

        def gated(x):
            activation = act(mlp.gate_proj(x))
            count(activation)
            return mlp.down_proj(activation * mlp.up_proj(x))

        return gated
    for first, second in (("fc1", "fc2"), ("linear_1", "linear_2")):  # CLIP's MLP, LLaVA's projector
        if hasattr(mlp, first) and hasattr(mlp, second):
            return _two_layer(getattr(mlp, first), act, getattr(mlp, second), count)
    raise SystemExit(f"no replacement forward for {type(mlp).__name__} (an MLP with {activation_name})")


def _two_layer(linear_1: nn.Module, act: nn.Module, linear_2: nn.Module, count):
    def plain(x):
        activation = act(linear_1(x))
        count(activation)
        return linear_2(activation)

    return plain


class ReplacedForwards:
    """While open, every site's MLPs of ``model`` count through replaced forwards (no hooks)."""

    def __init__(self, model: nn.Module, sites: Sequence[ResolvedSite]):
        self.model, self.sites = model, list(sites)
        self.active = {site.name: torch.zeros(site.layers, site.width, dtype=torch.int64) for site in self.sites}
        self.tokens = {site.name: torch.zeros(site.layers, dtype=torch.int64) for site in self.sites}
        self._replaced: list[nn.Module] = []

    def __enter__(self) -> ReplacedForwards:
        for site in self.sites:
            for layer, name in enumerate(site.module_names):
                parent_name, _, activation_name = name.rpartition(".")
                mlp = self.model.get_submodule(parent_name)
                active, tokens = self.active[site.name], self.tokens[site.name]
                mlp.forward = _counting_forward(mlp, activation_name, active, tokens, layer)
                self._replaced.append(mlp)
        return self

    def __exit__(self, *exc) -> None:
        for mlp in self._replaced:
            del mlp.forward  # the instance attribute: the class's forward is back
        self._replaced = []


def authors_way(model, processor, samples, sites: Sequence[ResolvedSite]) -> ReplacedForwards:
    """One sample at a time through the processor and the model with replaced MLP forwards."""
    model_type, options = model.config.model_type, forward_options(model)
    with torch.inference_mode(), ReplacedForwards(model, sites) as counter:
        for sample in samples:
            prompt = build_prompt(processor, model_type, STATS_PROMPT, sample)
            inputs = processor(images=[decode_image(sample)], text=[prompt], return_tensors="pt")
            model(**inputs.to(model.device).to(model.dtype), **options)
    return counter


def compare(authors: ReplacedForwards, ours: Counts) -> list[str]:
    """The differences between the two counts, per site (empty when they are equal)."""
    problems = []
    for site in authors.sites:
        for what, theirs, mine in (
            ("active", authors.active[site.name], ours.active[site.name, "all"]),
            ("tokens", authors.tokens[site.name], ours.tokens[site.name, "all"]),
        ):
            if theirs.shape != mine.shape:
                problems.append(f"{site.name} {what}: shapes {tuple(theirs.shape)} vs {tuple(mine.shape)}")
            elif not torch.equal(theirs, mine):
                differ = int((theirs != mine).sum())
                largest = int((theirs - mine).abs().max())
                problems.append(f"{site.name} {what}: {differ} of {theirs.numel()} entries differ (by up to {largest})")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_arguments(parser, repeats=5)
    parser.add_argument("--samples", type=int, default=32, help="samples per run (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="mmneuron's batch size (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per variant (default %(default)s)")
    parser.add_argument("--data", help="samples parquet (default: synthetic 'com' samples)")
    args = parser.parse_args(argv)
    common.setup(args)

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    reference, processor = common.load(args.model, args.device, "float32")  # the authors ran float32
    model = reference if dtype == torch.float32 else copy.deepcopy(reference).to(dtype)
    samples = read_samples(args.data, limit=args.samples) if args.data else common.samples(reference, args.samples)
    sites = resolve_sites(reference)

    results: dict = {}

    def authors():
        results[AUTHORS] = authors_way(reference, processor, samples, sites)

    def ours():
        results[OURS] = extract_counts(
            model, processor, samples, batch_size=args.batch_size, anyres_padding="count", progress=False
        )

    variants = {AUTHORS: authors, OURS: ours}
    times = common.alternate(variants, args.repeats, device, warmup=args.warmup)

    checked = results[OURS]
    if dtype != torch.float32:
        checked = extract_counts(
            reference, processor, samples, batch_size=args.batch_size, anyres_padding="count", progress=False
        )
    problems = compare(results[AUTHORS], checked)

    labels = {
        AUTHORS: f"{AUTHORS} (batch 1, float32, replaced forwards)",
        OURS: f"{OURS} (batch {args.batch_size}, {str(dtype).removeprefix('torch.')}, hooks)",
    }
    rows = common.timing_rows(times, AUTHORS, len(samples), labels)
    setting = {
        "model": f"{args.model} ({reference.config.model_type})",
        "samples": len(samples),
        "LM positions": int(checked.tokens["lm", "all"][0]) if ("lm", "all") in checked.tokens else "-",
        "sites": " ".join(f"{site.name} {site.layers}x{site.width}" for site in sites),
        "anyres padding": "counted",
        "repeats": args.repeats,
        "counts match": not problems,
    }
    common.report("authors_extraction", setting, rows, device, args.results)
    if problems:
        print("COUNTS DIFFER (mmneuron" + (" in float32" if dtype != torch.float32 else "") + " vs the authors' way):")
        for problem in problems:
            print(f"  {problem}")
        sys.exit(1)
    which = "float32 (an extra untimed run)" if dtype != torch.float32 else "the timed run"
    print(f"counts match: every site's active and token counts (scope all) are equal; mmneuron checked: {which}")


if __name__ == "__main__":
    main()
