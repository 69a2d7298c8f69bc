"""MINER's selection (Huang et al. 2024, arXiv 2410.04819), over domains instead of modalities.

Per domain and layer, three importance scores of each neuron - the activation probability, the
mean activation and the maximum activation - are min-max normalised over the layer's neurons and
mixed with ``weights`` (MINER's two attention scores need attention maps and are left out; its
default mix is mean 0.5, max 0.5). With K = round(top_rate * layers * width) and D domains, L layers:

``adaptive``  the K neurons of the highest score summed over domains, each to its highest-scoring domain;
``LA_MU``     per domain, its K // D highest-scoring neurons over all layers;
``LU_MA``     per layer, the K // L highest (domain, neuron) scores;
``uniform``   per layer and domain, the K // (D L) highest-scoring neurons.

The sets of one domain never repeat a neuron, but a neuron may be in several domains' sets (not in
``adaptive``). With matched sizes (DAPE's k_d neurons per domain) the strategies keep their shape:
``LA_MU`` takes each domain's top k_d; ``uniform`` spreads k_d over the layers (k_d // L each, the
remainder to the layers with the best next neuron); ``adaptive`` fills each domain with its first
k_d neurons in the summed-score order that score best on it; ``LU_MA`` gives each layer an equal
share of sum(k_d) (the remainder to the first layers) and takes its best (domain, neuron) scores of
domains not yet full. Ties: the lowest flat index, then the lowest domain.
"""

from __future__ import annotations

import math

import torch

from mmneuron.selection import SelectionError, SiteSelection

from .common import SiteStatistics, domain_sizes, pairs, shortfall, top

STRATEGIES = ("adaptive", "LA_MU", "LU_MA", "uniform")
SCORES = ("prob", "mean", "max")


def check_weights(weights: dict) -> dict:
    """The score mix: a weight >= 0 for each of prob, mean and max, not all 0."""
    unknown = sorted(set(weights) - set(SCORES))
    values = {name: float(weights.get(name, 0.0)) for name in SCORES}
    if unknown or any(not math.isfinite(v) or v < 0 for v in values.values()) or not any(values.values()):
        raise SelectionError(f"MINER weights must be >= 0 for {list(SCORES)}, not all 0; got {weights}")
    return values


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    """Min-max over each layer's neurons (the last dim); a constant layer scores 0 (MINER divides by 0)."""
    scores = torch.where(torch.isfinite(scores), scores, torch.zeros_like(scores))  # a layer without tokens
    low, high = scores.amin(-1, keepdim=True), scores.amax(-1, keepdim=True)
    spread = high - low
    return torch.where(spread > 0, (scores - low) / torch.where(spread > 0, spread, 1.0), torch.zeros_like(scores))


def importance(statistics: SiteStatistics, weights: dict) -> torch.Tensor:
    """The mixed score (domains, layers, width); the moments are read only for a weight > 0."""
    parts = {"prob": statistics.p.double, "mean": statistics.means, "max": statistics.maxima}
    total = torch.zeros_like(statistics.p, dtype=torch.float64)
    for name, weight in weights.items():
        if weight:
            total += weight * _normalised(parts[name]().double())
    return total


def _adaptive(scores, domains, k, caps):
    """The neurons in order of their summed score, each to its best domain: the first ``k`` in all,
    or (``caps``) per domain its first ``caps[d]``."""
    total, best = scores.sum(0).flatten(), scores.flatten(1).argmax(0)  # argmax: the first best domain
    order = top(total, total.numel() if caps else k)
    return {d: order[best[order] == i][: caps[d] if caps else None] for i, d in enumerate(domains)}


def _la_mu(scores, domains, sizes):
    return {d: top(scores[i], sizes[d]) for i, d in enumerate(domains)}


def _lu_ma(scores, domains, budgets, caps):
    """Per layer, its budget of the best (domain, neuron) scores, skipping domains at their cap."""
    width = scores.shape[2]
    chosen = {d: [] for d in domains}
    for layer, budget in enumerate(budgets):
        for index in top(scores[:, layer], scores.shape[0] * width).tolist():
            if budget == 0:
                break
            domain, neuron = domains[index // width], index % width
            if caps is None or len(chosen[domain]) < caps[domain]:
                chosen[domain].append(layer * width + neuron)
                budget -= 1
    return {d: torch.tensor(chosen[d], dtype=torch.long) for d in domains}


def _uniform(scores, domains, per_layer, extra):
    """Per domain, ``per_layer[d]`` neurons from each layer, and ``extra[d]`` more: one each from the
    layers whose next-best neuron scores highest."""
    layers, width = scores.shape[1:]
    chosen = {}
    for i, d in enumerate(domains):
        base = per_layer[d]
        ranked = [top(scores[i, layer], base + 1) for layer in range(layers)]
        taken = [layer * width + ranked[layer][:base] for layer in range(layers)]
        nexts = torch.tensor(
            [
                float(scores[i, layer, ranked[layer][base]]) if len(ranked[layer]) > base else -math.inf
                for layer in range(layers)
            ]
        )
        taken += [
            layer * width + ranked[layer][base : base + 1]
            for layer in top(nexts, extra[d], torch.isfinite(nexts)).tolist()
        ]
        chosen[d] = torch.cat(taken)
    return chosen


def selector(strategy: str):
    """The site rule of one strategy: ``(statistics, target, weights) -> (by_domain, details)``."""
    if strategy not in STRATEGIES:
        raise SelectionError(f"unknown MINER strategy {strategy!r}; expected one of {STRATEGIES}")

    def select_site(statistics: SiteStatistics, target, weights: dict) -> tuple[dict, dict]:
        scores = importance(statistics, weights)
        domains, layers = statistics.domains, statistics.layers
        matched = isinstance(target, SiteSelection)
        count = len(domains)
        sizes = domain_sizes(target, domains, 1) if matched else None  # DAPE's k_d
        if strategy == "adaptive":
            flat = _adaptive(scores, domains, target, sizes)
        elif strategy == "LA_MU":
            flat = _la_mu(scores, domains, sizes or domain_sizes(target, domains, count))
        elif strategy == "LU_MA":
            total = sum(sizes.values()) if matched else target // layers * layers
            budgets = [total // layers + (layer < total % layers) for layer in range(layers)]
            flat = _lu_ma(scores, domains, budgets, sizes)
        else:
            share = {d: divmod(n, layers) for d, n in sizes.items()} if matched else None
            per_layer = (
                {d: share[d][0] for d in domains} if matched else dict.fromkeys(domains, target // (count * layers))
            )
            extra = {d: share[d][1] for d in domains} if matched else dict.fromkeys(domains, 0)
            flat = _uniform(scores, domains, per_layer, extra)
        if sizes is None:  # the unmatched strategies fix the total (adaptive, LU_MA) or each domain's share
            sizes = {d: len(flat[d]) for d in domains}
        chosen = {d: pairs(flat[d], statistics.width) for d in domains}
        return chosen, {"strategy": strategy, "k_by_domain": sizes, "shortfall": shortfall(chosen, sizes)}

    return select_site
