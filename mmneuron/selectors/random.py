"""``random``: the matched random control as a selection method of its own, and the draw it shares
with the ablation's random controls (:func:`random_control`).

Matched (``match_sizes``): per site, domain and layer as many neurons as DAPE's set has there,
drawn uniformly without replacement from the layer - the rule of the ablation's controls, drawn
here with its own seed identity (``method``, domain), so independent of them. Unmatched: per
domain k // D neurons drawn uniformly without replacement from the whole site.
"""

from __future__ import annotations

import zlib

import numpy as np

from mmneuron.errors import MmneuronError
from mmneuron.selection import SiteSelection

from .common import SiteStatistics, domain_sizes, shortfall

Pairs = list[tuple[int, int]]


class ControlError(MmneuronError):
    """A random control that cannot be drawn (more neurons in a layer than it has)."""


def _generator(seed: int, site: str, *identity: str) -> np.random.Generator:
    return np.random.default_rng([seed, *(zlib.crc32(text.encode()) for text in (site, *identity))])


def random_control(pairs: Pairs, width: int, seed: int, site: str, *identity: str) -> Pairs:
    """As many neurons per layer as ``pairs`` has, drawn uniformly without replacement from the
    layer's ``width`` neurons. The generator is seeded by ``seed``, the site's name and the
    ``identity`` strings (condition, source and evaluated domain), so each (seed, site, domains,
    condition) is an independent draw, reproducible on any machine."""
    per_layer: dict[int, int] = {}
    for layer, _ in pairs:
        per_layer[layer] = per_layer.get(layer, 0) + 1
    if any(count > width for count in per_layer.values()):
        raise ControlError(f"site '{site}': more neurons in a layer than its width {width}")
    rng = _generator(seed, site, *identity)
    drawn = []
    for layer in sorted(per_layer):
        drawn += [(layer, int(neuron)) for neuron in rng.choice(width, size=per_layer[layer], replace=False)]
    return sorted(drawn)


def select_site(statistics: SiteStatistics, target, seed: int) -> tuple[dict, dict]:
    domains, width, site = statistics.domains, statistics.width, statistics.site
    sizes = domain_sizes(target, domains, len(domains))
    if isinstance(target, SiteSelection):
        chosen = {d: random_control(target.by_domain[d], width, seed, site, "method", d) for d in domains}
    else:
        total = statistics.layers * width
        chosen = {
            d: sorted(
                divmod(int(i), width)
                for i in _generator(seed, site, "method", d).choice(total, sizes[d], replace=False)
            )
            for d in domains
        }
    return chosen, {"k_by_domain": sizes, "shortfall": shortfall(chosen, sizes)}
