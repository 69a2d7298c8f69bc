"""Hidden-state perturbation under deactivation: how far each LLM layer's residual stream moves.

Per batch, one clean forward keeps every LLM layer's residual stream (the decoder layer's output,
before the final norm, as the lens reads it) at the batch's real
positions only. Then, per condition, one forward with the condition's neurons deactivated compares
each layer's output with the clean one as the layer produces it and keeps two numbers per
position: the cosine similarity and the relative L2 distance ``||h_ablated - h_clean|| / ||h_clean||``.
Ablated states are never stored; only one batch's clean states are held.

The cosine is kept as its distance ``1 - cos = ||u - v||^2 / 2`` of the unit vectors ``u``, ``v``
(the same value as ``1 - a.b / (|a| |b|)``): an unchanged state reads exactly cos 1, where the
dot-product form can round to ``1 - 1e-7``, and small changes keep their precision (float32
values near 1 have steps of 6e-8). Condition ``none`` runs the second forward too: it measures the run-to-run
noise floor, exactly cos 1 / rel L2 0 where the forward is deterministic (the CPU).

Batches are padded on the right (no generation): causal attention never looks at right padding,
so a padded row gives what the sample alone gives.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from mmneuron.conditions import Condition
from mmneuron.counts import Counts
from mmneuron.data.samples import Sample
from mmneuron.defaults import EVALUATION, PERTURBATION
from mmneuron.errors import MmneuronError
from mmneuron.hooks.deactivate import Deactivation
from mmneuron.models.decoder import decoder_layers, each_layer_output
from mmneuron.models.inputs import RIGHT, build_prompt, check_template, domain_batches, scope_masks, with_all_scope
from mmneuron.models.sites import resolve_sites
from mmneuron.selection import Selection

log = logging.getLogger(__name__)

TABLE_COLUMNS = (
    "model",
    "condition",
    "control",
    "seed",
    "domain",
    "scope",
    "layer",
    "cosine_mean",
    "cosine_std",
    "rel_l2_mean",
    "rel_l2_std",
    "n",
    "samples",
    "deactivated",
)


class PerturbationError(MmneuronError):
    """A model or input the perturbation cannot handle; the message names the model type or domain."""


def compare(clean: torch.Tensor, ablated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine distance (1 - cosine similarity) and relative L2 distance per row (positions x hidden
    -> positions), in float32."""
    clean, ablated = clean.float(), ablated.float()
    tiny = torch.finfo(torch.float32).tiny
    clean_norm = clean.norm(dim=-1).clamp_min(tiny)
    unit_clean = clean / clean_norm[:, None]
    unit_ablated = ablated / ablated.norm(dim=-1).clamp_min(tiny)[:, None]
    distance = (unit_ablated - unit_clean).pow(2).sum(-1) / 2
    return distance, (ablated - clean).norm(dim=-1) / clean_norm


@dataclass
class PerturbationStats:
    """Additive sums per layer over the positions of one scope."""

    n: int
    distance_sum: np.ndarray  # cosine distance 1 - cos; float64, layers
    distance_sq_sum: np.ndarray
    rel_sum: np.ndarray
    rel_sq_sum: np.ndarray

    def merge(self, other: PerturbationStats) -> PerturbationStats:
        if len(other.rel_sum) != len(self.rel_sum):
            raise PerturbationError(
                f"cannot merge perturbation statistics of {len(self.rel_sum)} and {len(other.rel_sum)} layers"
            )
        return PerturbationStats(
            self.n + other.n,
            self.distance_sum + other.distance_sum,
            self.distance_sq_sum + other.distance_sq_sum,
            self.rel_sum + other.rel_sum,
            self.rel_sq_sum + other.rel_sq_sum,
        )

    def mean_std(self, total: np.ndarray, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over positions (population, ddof=0); nan without positions."""
        if self.n == 0:
            return np.full_like(total, np.nan), np.full_like(total, np.nan)
        mean = total / self.n
        return mean, np.sqrt(np.clip(squares / self.n - mean**2, 0.0, None))

    def cosine(self) -> tuple[np.ndarray, np.ndarray]:
        distance, std = self.mean_std(self.distance_sum, self.distance_sq_sum)
        return 1 - distance, std

    def rel_l2(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mean_std(self.rel_sum, self.rel_sq_sum)


def _aggregate(
    distance: torch.Tensor, rel: torch.Tensor, members: Mapping[str, torch.Tensor]
) -> dict[str, PerturbationStats]:
    """Sums per layer over each scope's positions (``distance``, ``rel``: layers x positions)."""
    distance, rel = distance.double(), rel.double()
    values = torch.stack([distance, distance.pow(2), rel, rel.pow(2)])  # 4 x layers x positions
    stats = {}
    for scope, member in members.items():
        sums = (values @ member.to(values.device).double()).cpu().numpy()  # 4 x layers
        stats[scope] = PerturbationStats(int(member.sum()), *sums)
    return stats


def perturbation(
    model: nn.Module,
    inputs: Mapping,
    scopes_masks: Mapping[str, torch.Tensor],
    deactivations: Mapping[object, Deactivation],
) -> dict[object, dict[str, PerturbationStats]]:
    """Per deactivation (any key), per scope: perturbation sums of one batch.

    One clean forward, then one forward per deactivation. ``scopes_masks`` maps a scope name to a
    bool mask (batch x seq) of the positions it counts; positions in no scope are never compared.
    """
    union = torch.zeros_like(next(iter(scopes_masks.values())), dtype=torch.bool)
    for mask in scopes_masks.values():
        union |= mask.to(union.device).bool()
    members = {scope: mask.to(union.device).bool()[union] for scope, mask in scopes_masks.items()}
    layers = len(decoder_layers(model))
    clean: list[torch.Tensor | None] = [None] * layers

    def keep(index: int, hidden: torch.Tensor) -> None:
        clean[index] = hidden[union.to(hidden.device)]

    each_layer_output(model, inputs, keep)
    if any(deactivation.intervention.needs_positions for deactivation in deactivations.values()):
        positions = scope_masks(model, inputs)  # the language model's image and text positions, once
    results = {}
    for key, deactivation in deactivations.items():
        distance: list[torch.Tensor | None] = [None] * layers
        rel: list[torch.Tensor | None] = [None] * layers

        def measure(index: int, hidden: torch.Tensor) -> None:
            # called only within this iteration, so the loop variables are the current ones
            distance[index], rel[index] = compare(clean[index], hidden[union.to(hidden.device)])  # noqa: B023

        if deactivation.intervention.needs_positions:
            deactivation.set_positions(positions)
        with deactivation:
            each_layer_output(model, inputs, measure)
        device = union.device
        results[key] = _aggregate(
            torch.stack([d.to(device) for d in distance]), torch.stack([r.to(device) for r in rel]), members
        )
    return results


@dataclass
class PerturbationRun:
    """Statistics per (condition, domain) and scope, merged over batches; the tidy table."""

    model_name: str = ""
    conditions: list[Condition] = field(default_factory=list)  # the table's order
    stats: dict[tuple[Condition, str], dict[str, PerturbationStats]] = field(default_factory=dict)
    deactivated: dict[tuple[Condition, str], int] = field(default_factory=dict)
    samples: Counter = field(default_factory=Counter)
    skipped: list[dict] = field(default_factory=list)  # {sample_id, domain, reason}
    settings: dict = field(default_factory=dict)

    def add(self, key: tuple[Condition, str], stats: Mapping[str, PerturbationStats]) -> None:
        current = self.stats.setdefault(key, {})
        for scope, value in stats.items():
            current[scope] = current[scope].merge(value) if scope in current else value

    def table(self) -> pd.DataFrame:
        """One row per (condition, control, seed, domain, scope, layer); scope ``all`` = image + text."""
        rows = []
        order = {condition: i for i, condition in enumerate(self.conditions)}
        for condition, domain in sorted(self.stats, key=lambda key: (order.get(key[0], len(order)), key[1])):
            for scope, s in with_all_scope(self.stats[condition, domain]).items():
                (cos_mean, cos_std), (rel_mean, rel_std) = s.cosine(), s.rel_l2()
                for layer in range(len(cos_mean)):
                    rows.append(
                        {
                            "model": self.model_name,
                            "condition": condition.name,
                            "control": condition.control,
                            "seed": condition.seed,
                            "domain": domain,
                            "scope": scope,
                            "layer": layer,
                            "cosine_mean": cos_mean[layer],
                            "cosine_std": cos_std[layer],
                            "rel_l2_mean": rel_mean[layer],
                            "rel_l2_std": rel_std[layer],
                            "n": s.n,
                            "samples": self.samples[domain],
                            "deactivated": self.deactivated[condition, domain],
                        }
                    )
        table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
        table["seed"] = table["seed"].astype("Int64")
        return table


def run_perturbation(
    model: nn.Module,
    processor,
    samples: Iterable[Sample],
    selection: Selection,
    conditions: Sequence[Condition],
    prompt: str = EVALUATION.prompts["default"],
    prompts: Mapping[str, str] | None = None,
    chat: bool = EVALUATION.chat,
    batch_size: int = PERTURBATION.batch_size,
    value: float = 0.0,
    model_name: str = "",
    progress: bool = True,
    counts: Sequence[Counts] | None = None,
) -> PerturbationRun:
    """The perturbation of every condition over ``samples`` (any mix of domains; batches never mix
    domains). Each domain gets its own neurons (or their random control) deactivated; ``counts``
    (every domain's statistics) give the mean activations of conditions that ask for them.

    Prompts: ``prompts[domain]`` or ``prompt``, filled in by the input path as the ablation's are
    (``{question}``, ``{options}``, meta fields; with ``chat`` one user turn of the chat template).
    Corrupt images are logged by sample id and listed in ``skipped``; the rest go on.
    """
    if not conditions:
        raise PerturbationError("no conditions to measure")
    if len(set(conditions)) != len(conditions):
        raise PerturbationError(f"duplicate conditions: {[c for c in conditions if conditions.count(c) > 1]}")
    prompts = dict(prompts or {})
    for template in (prompt, *prompts.values()):
        check_template(template)
    sites = resolve_sites(model)
    selection.check_sites(sites)
    model_type = model.config.model_type
    settings = {
        "prompt": prompt,
        "prompts": prompts,
        "chat": chat,
        "batch_size": batch_size,
        "value": value,
        "padding": RIGHT,
        "dtype": str(model.dtype).removeprefix("torch."),
        "selection": {"model": selection.model, **selection.parameters},
    }
    run = PerturbationRun(model_name, list(conditions), settings=settings)
    model.eval()

    def prompt_of(sample: Sample) -> str:
        return build_prompt(processor, model_type, prompts.get(sample.domain, prompt), sample, chat)

    deactivations: dict[str, dict[Condition, Deactivation]] = {}
    batches = domain_batches(model, processor, samples, prompt_of, batch_size, RIGHT, "perturbation", progress)
    for domain, batch, encoded, skipped in batches:
        run.skipped += skipped
        if domain not in deactivations:
            deactivations[domain] = {c: c.deactivation(sites, selection, domain, value, counts) for c in conditions}
            for condition, deactivation in deactivations[domain].items():
                run.deactivated[condition, domain] = deactivation.count
        if encoded is None:
            continue
        inputs = encoded.inputs
        results = perturbation(model, inputs, scope_masks(model, inputs), deactivations[domain])
        for condition, stats in results.items():
            run.add((condition, domain), stats)
        run.samples[domain] += len(batch)
    if run.skipped:
        log.warning("skipped %d sample(s) with unusable images", len(run.skipped))
    return run
