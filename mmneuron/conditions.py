"""Ablation conditions: which sites are deactivated, whose neurons, and the random controls.

A condition is named by the sites it deactivates: ``none``, one site (``lm``), sites joined by
``+`` (``qformer+query``) or ``all`` (every site of the neuron file), optionally followed by ``@``
and how (:func:`parse_intervention`): ``lm@mean``, ``all@x2_image``, ``lm@text_prefill``. Without
it the neurons output the fixed value (0, the paper's) at every position and step. Applied to an evaluation
domain it deactivates a *source* domain's neurons in those sites - the evaluation domain itself,
or another one for the cross-domain matrix - or, as the random control, as many random neurons
per site and layer as that set has, drawn uniformly without replacement from the same site and
layer with a generator seeded per (seed, site, evaluated and source domain, condition): every
control is its own draw, the same in every stage that asks for it (ablation and perturbation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mmneuron.counts import Counts, mean_activations
from mmneuron.errors import MmneuronError
from mmneuron.hooks.deactivate import FIXED, IMAGE, MEAN, SCALE, TEXT, Deactivation, Intervention
from mmneuron.models.sites import ResolvedSite
from mmneuron.selection import Selection
from mmneuron.selectors.random import random_control

NONE, ALL = "none", "all"
MARK = "@"  # between a condition's sites and its intervention
PREFILL = "prefill"
OWN, RANDOM = "domain", "random"  # the kinds of neuron sets (the ``control`` field of the outputs)
# The paper's conditions (docs/method.md, section 5), by model type.
PAPER_CONDITIONS = {
    "llava_next": (NONE, "lm", "vision", "projector", ALL),
    "instructblip": (NONE, "lm", "vision", "qformer+query", "vision+qformer+query", ALL),
}

Pairs = list[tuple[int, int]]


class ConditionError(MmneuronError):
    """A condition that cannot be applied: bad name, unknown site or domain."""


def parse_intervention(name: str, value: float = 0.0) -> Intervention:
    """The intervention of condition ``name``: its part after ``@``, words joined by ``_`` in this
    order, each optional - what (``mean``: the neuron's mean activation; ``x<factor>``: its output
    times the factor; neither: the fixed ``value``), where (``image`` or ``text`` positions; neither:
    all) and when (``prefill``: the prefill only; else every step too)."""
    sites, mark, spec = name.partition(MARK)
    if not mark:
        return Intervention(value=value)
    words = spec.split("_")
    mode, factor, positions, prefill = FIXED, 1.0, ALL, False
    if words and words[0] == MEAN:
        mode = MEAN
        words.pop(0)
    elif words and words[0].startswith("x"):
        try:
            factor = float(words[0][1:])
        except ValueError:
            factor = math.nan
        if not math.isfinite(factor):
            raise ConditionError(f"condition {name!r}: {words[0]!r} is not x<factor> with a finite number")
        mode = SCALE
        words.pop(0)
    if words and words[0] in (IMAGE, TEXT):
        positions = words.pop(0)
    if words and words[0] == PREFILL:
        prefill = True
        words.pop(0)
    if words or sites == NONE or spec == "":
        raise ConditionError(
            f"condition {name!r}: expected SITES@[mean|x<factor>][_image|_text][_prefill], with at least one "
            "of them, in this order" + ("; 'none' changes nothing" if sites == NONE else "")
        )
    return Intervention(mode=mode, value=value, factor=factor, positions=positions, prefill_only=prefill)


def condition_sites(name: str, available: list[str]) -> tuple[str, ...]:
    """The sites that condition ``name`` deactivates, out of the ``available`` ones (in their order)."""
    parse_intervention(name)  # names a malformed intervention
    name = name.partition(MARK)[0]
    if name == NONE:
        return ()
    if name == ALL:
        return tuple(available)
    sites = name.split("+")
    unknown = [site for site in sites if site not in available]
    if unknown or not all(sites) or len(set(sites)) != len(sites):
        raise ConditionError(
            f"condition {name!r}: expected {NONE!r}, {ALL!r} or distinct sites joined by '+' out of {available}"
            + (f"; unknown site(s) {unknown}" if unknown else "")
        )
    return tuple(sites)


@dataclass(frozen=True)
class Condition:
    """One run's intervention: ``name`` applied with the ``source`` domain's neurons, or with a
    random control drawn with ``seed`` (``source`` None means the evaluation domain)."""

    name: str
    seed: int | None = None
    source: str | None = None

    @property
    def control(self) -> str:
        return OWN if self.seed is None else RANDOM

    def __post_init__(self) -> None:
        if self.name == NONE and (self.seed is not None or self.source is not None):
            raise ConditionError("condition 'none' deactivates nothing: it takes no random seed or source domain")
        parse_intervention(self.name)

    def intervention(self, value: float = 0.0) -> Intervention:
        """How the neurons are changed, the fixed ones set to ``value``."""
        return parse_intervention(self.name, value)

    def deactivation(
        self,
        sites: Sequence[ResolvedSite],
        selection: Selection,
        domain: str,
        value: float = 0.0,
        counts: Sequence[Counts] | None = None,
    ) -> Deactivation:
        """The condition's :class:`Deactivation` for evaluating ``domain``; a ``mean`` intervention
        takes the mean activations of every domain's ``counts`` pooled, over the positions it changes."""
        intervention = self.intervention(value)
        means = None
        if intervention.mode == MEAN:
            if not counts:
                raise ConditionError(
                    f"condition {self.name!r} sets neurons to their mean activation: it needs the activation "
                    "statistics (--stats)"
                )
            means = mean_activations(counts, scope=intervention.positions)
        return Deactivation(sites, self.neurons(selection, domain), intervention, means)

    @property
    def run(self) -> str:
        """The run's name, ``{condition}/{variant}``: the variant is ``own`` (the evaluated domain's
        neurons), ``random{seed}`` (their random control) or ``from_{source}`` (another domain's)."""
        if self.seed is not None and self.source is not None:
            raise ConditionError(
                f"condition {self.name!r}: a run name holds a random seed or a source domain, not both"
            )
        if self.seed is not None:
            return f"{self.name}/random{self.seed}"
        return f"{self.name}/{'own' if self.source is None else f'from_{self.source}'}"

    @classmethod
    def from_run(cls, run: str) -> Condition:
        """The condition of a run name (:attr:`run`)."""
        name, _, variant = run.partition("/")
        seed = variant.removeprefix("random")
        if not name or not variant:
            raise ConditionError(f"a run is CONDITION/VARIANT (own, random<seed>, from_<domain>), got {run!r}")
        if variant == "own":
            return cls(name)
        if variant.startswith("random") and seed.isdigit():
            return cls(name, seed=int(seed))
        if variant.startswith("from_") and len(variant) > len("from_"):
            return cls(name, source=variant.removeprefix("from_"))
        raise ConditionError(f"run {run!r}: the variant must be own, random<seed> or from_<domain>, got {variant!r}")

    def neurons(self, selection: Selection, domain: str) -> dict[str, Pairs]:
        """Per site, the ``(layer, neuron)`` pairs deactivated when evaluating ``domain``."""
        source = self.source or domain
        if source not in selection.domains:
            raise ConditionError(f"domain {source!r} has no neuron set; the neuron file has {selection.domains}")
        sites = condition_sites(self.name, list(selection.sites))
        own = {}
        for site in sites:
            pairs = selection.sites[site].by_domain.get(source)
            if pairs is None:
                raise ConditionError(f"site '{site}' of the neuron file lists no set for domain {source!r}")
            own[site] = sorted(pairs)
        if self.seed is None:
            return own
        identity = (self.name, source, domain)
        return {
            site: random_control(own[site], selection.sites[site].width, self.seed, site, *identity) for site in sites
        }
