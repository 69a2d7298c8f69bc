"""``margin``: a neuron's activation probability in a domain minus its largest in any other domain.

Per domain, the neurons with the largest positive margin (ties: lowest flat index). A margin > 0
means the neuron fires more often on this domain than on every other; a neuron with no positive
margin is specific to no domain and never taken (the shortfall is reported).
"""

from __future__ import annotations

import torch

from mmneuron.selection import SelectionError

from .common import SiteStatistics, domain_sizes, pairs, shortfall, top


def margins(p: torch.Tensor) -> torch.Tensor:
    """``p[d] - max over d' != d of p[d']`` for every domain (p: domains x layers x width)."""
    if p.shape[0] < 2:
        raise SelectionError("the margin needs at least two domains")
    others = torch.stack([torch.cat([p[:d], p[d + 1 :]]).amax(0) for d in range(p.shape[0])])
    return p - others


def select_site(statistics: SiteStatistics, target) -> tuple[dict, dict]:
    sizes = domain_sizes(target, statistics.domains, len(statistics.domains))
    scores = margins(statistics.p.double())
    chosen = {
        d: pairs(top(scores[i], sizes[d], scores[i] > 0), statistics.width) for i, d in enumerate(statistics.domains)
    }
    return chosen, {"k_by_domain": sizes, "shortfall": shortfall(chosen, sizes)}
