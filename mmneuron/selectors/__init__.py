"""Neuron selectors: interchangeable rules over the same activation statistics (docs/selectors.md).

Every method takes the counts of every domain (one :class:`~mmneuron.counts.Counts` per domain)
and gives a :class:`~mmneuron.selection.Selection` (``neurons.json``) naming the method and every
parameter. ``dape`` is :func:`mmneuron.selection.select`, unchanged; the others (``margin``, MINER's
``miner_adaptive``, ``miner_la_mu``, ``miner_lu_ma``, ``miner_uniform``, and ``random``) choose per
site, from the site's statistics, a set of neurons per domain. With ``match_sizes`` each of them
selects, per site and domain, as many neurons as DAPE does with the same rates (``random`` as many
per layer), so that a causal comparison compares rules, not sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmneuron.counts import Counts
from mmneuron.defaults import SELECTION, SELECTION_METHODS
from mmneuron.selection import Selection, SelectionError, SiteSelection, dape, stack_probabilities
from mmneuron.selection import select as select_dape

from . import margin, miner, random
from .common import SiteStatistics

DAPE = "dape"
# method -> (its site rule, the names of the method's own parameters the rule takes)
_RULES = {
    "margin": (margin.select_site, ()),
    "miner_adaptive": (miner.selector("adaptive"), ("weights",)),
    "miner_la_mu": (miner.selector("LA_MU"), ("weights",)),
    "miner_lu_ma": (miner.selector("LU_MA"), ("weights",)),
    "miner_uniform": (miner.selector("uniform"), ("weights",)),
    "random": (random.select_site, ("seed",)),
}
assert set(_RULES) | {DAPE} == set(SELECTION_METHODS), "defaults.SELECTION_METHODS lists the methods"


def select(
    method: str,
    counts: Sequence[Counts],
    *,
    top_rate: float = SELECTION.top_rate,
    filter_rate: float = SELECTION.filter_rate,
    assign_rate: float = SELECTION.assign_rate,
    scope: str = SELECTION.scope,
    match_sizes: bool = SELECTION.match_sizes,
    weights: dict | None = None,
    seed: int = 0,
) -> Selection:
    """Select every site's neurons by ``method``. ``filter_rate`` and ``assign_rate`` are DAPE's
    (used by the others only for the sizes to match); ``weights`` are MINER's score mix
    (default ``selection.miner_weights``), ``seed`` the random method's."""
    rates = {"top_rate": top_rate, "filter_rate": filter_rate, "assign_rate": assign_rate}
    if method == DAPE:
        return select_dape(counts, **rates, scope=scope)
    if method not in _RULES:
        raise SelectionError(f"unknown selection method {method!r}; expected one of {list(SELECTION_METHODS)}")
    reference = select_dape(counts, **rates, scope=scope) if match_sizes else None
    rule, own = _RULES[method]
    given = {"weights": miner.check_weights(weights or SELECTION.miner_weights), "seed": seed}
    options = {name: given[name] for name in own}
    domains, stacked, scopes = stack_probabilities(counts, scope)
    by_domain = {c.domain: c for c in counts}
    first = by_domain[domains[0]]
    sites = {}
    for name, p in stacked.items():
        layers, width = p.shape[1:]
        statistics = SiteStatistics(name, domains, p, [by_domain[d] for d in domains], scopes[name])
        target = reference.sites[name] if reference else round(top_rate * layers * width)
        chosen, details = rule(statistics, target, **options)
        sites[name] = SiteSelection(
            layers=layers,
            width=width,
            scope=scopes[name],
            inert_layers=sorted(first.sites[name].inert_layers),
            k=sum(details["k_by_domain"].values()),
            by_domain={d: sorted(chosen[d]) for d in domains},
            details=details,
            probabilities=p,
            entropy=dape(p),
        )
    parameters = {"top_rate": top_rate, "scope": scope, "match_sizes": match_sizes, **options}
    if match_sizes:
        parameters.update(filter_rate=filter_rate, assign_rate=assign_rate)
    return Selection(
        model=first.model,
        domains=domains,
        samples={d: by_domain[d].samples for d in domains},
        parameters=parameters,
        sites=sites,
        method=method,
    )
