"""What every selector shares: a site's statistics stacked over domains, sizes, and ranking."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmneuron.counts import Counts
from mmneuron.selection import Neuron, SiteSelection


@dataclass
class SiteStatistics:
    """One site's statistics over the (sorted) ``domains``: ``p`` (domains, layers, width) and the
    counts they come from, for the activation moments (of ``scope``)."""

    site: str
    domains: list[str]
    p: torch.Tensor
    counts: list[Counts]
    scope: str

    @property
    def layers(self) -> int:
        return self.p.shape[1]

    @property
    def width(self) -> int:
        return self.p.shape[2]

    def means(self) -> torch.Tensor:
        """Mean activations (domains, layers, width); a counts file without moments raises, naming it."""
        return torch.stack([c.site_means(self.site, self.scope) for c in self.counts])

    def maxima(self) -> torch.Tensor:
        """Maximum activations (domains, layers, width); -inf where a layer counted no position."""
        return torch.stack([c.site_maxima(self.site, self.scope) for c in self.counts])


def domain_sizes(target: int | SiteSelection, domains: list[str], parts: int) -> dict[str, int]:
    """Neurons to take per domain: DAPE's set sizes of the site (a :class:`SiteSelection` to match),
    or ``target // parts`` each (the method's share of k = round(top_rate * layers * width))."""
    if isinstance(target, SiteSelection):
        return {d: len(target.by_domain[d]) for d in domains}
    return dict.fromkeys(domains, target // parts)


def top(scores: torch.Tensor, k: int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Flat indices of the ``k`` highest ``scores`` (any shape, flattened) among the ``eligible``;
    ties go to the lowest flat index. Fewer when fewer are eligible."""
    flat = scores.flatten().double()
    candidates = torch.arange(flat.numel()) if eligible is None else eligible.flatten().nonzero().squeeze(1)
    order = torch.sort(-flat[candidates], stable=True).indices  # stable: ties by flat index
    return candidates[order[: max(k, 0)]]


def pairs(flat: torch.Tensor, width: int) -> list[Neuron]:
    """``(layer, neuron)`` of flat indices ``layer * width + neuron``."""
    return [(index // width, index % width) for index in flat.tolist()]


def shortfall(chosen: dict[str, list], sizes: dict[str, int]) -> int:
    return sum(max(sizes[d] - len(chosen[d]), 0) for d in sizes)
