"""Domain-specific neuron selection by DAPE (docs/method.md, section 4: LAPE's rule, made total).

Per site, with ``p`` of shape (domains, layers, width):

1. ``tau`` = the k-th smallest of all p values of the site, k = round(filter_rate * count);
2. candidates = neurons with some domain's p > tau;
3. of those, the k = round(top_rate * layers * width) with the lowest DAPE (ties: lowest flat
   index ``layer * width + neuron``);
4. each selected neuron belongs to every domain with p > tau', the assign_rate percentile.

Where LAPE's code misbehaves, this does not: a domain with no neuron is listed with an empty list;
a neuron that never fires is never a candidate (tau is one of the p values, so p > tau implies
p > 0); when fewer neurons pass the filter than k, only those are selected and the shortfall is
reported instead of padding with excluded neurons. Percentile ranks are clamped to [1, count]
(a rate whose k rounds to 0 takes the smallest value); a top_rate whose k rounds to 0 selects none.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from .counts import SCOPES, Counts
from .defaults import EXTERNAL_METHOD, SELECTION, SELECTION_METHODS
from .errors import MmneuronError

log = logging.getLogger(__name__)

METHOD = "dape"  # this module's rule; the other selectors (mmneuron.selectors) fill the same containers


class SelectionError(MmneuronError):
    """Inputs that cannot be selected from, or a neurons file that cannot be read."""


Neuron = tuple[int, int]


@dataclass
class SiteSelection:
    """One site's selection. The tensors are present after :func:`select`, not after loading JSON.

    ``tau``, ``tau_assign``, ``candidates`` and ``entropy_cutoff`` are DAPE's (None for another
    method, whose own per-site values, its ``shortfall`` among them, are in ``details``)."""

    layers: int
    width: int
    scope: str
    inert_layers: list[int]
    k: int
    by_domain: dict[str, list[Neuron]]
    unassigned: list[Neuron] = field(default_factory=list)  # DAPE: selected, above tau' in no domain
    tau: float | None = None
    tau_assign: float | None = None
    candidates: int | None = None
    entropy_cutoff: float | None = None  # DAPE of the last neuron taken; None when none was
    details: dict = field(default_factory=dict)
    probabilities: torch.Tensor | None = field(default=None, repr=False)  # (domains, layers, width)
    entropy: torch.Tensor | None = field(default=None, repr=False)  # (layers, width)
    candidate_mask: torch.Tensor | None = field(default=None, repr=False)  # (layers, width)

    @property
    def selected(self) -> list[Neuron]:
        """Every selected neuron, sorted."""
        return sorted({n for neurons in self.by_domain.values() for n in neurons} | set(self.unassigned))

    @property
    def is_dape(self) -> bool:
        return self.tau is not None

    @property
    def shortfall(self) -> int:
        """Neurons the rule wanted but could not take (too few passed its filter)."""
        return max(self.k - len(self.selected), 0) if self.is_dape else int(self.details.get("shortfall", 0))

    def to_dict(self) -> dict:
        common = {
            "layers": self.layers,
            "width": self.width,
            "scope": self.scope,
            "inert_layers": list(self.inert_layers),
            "k": self.k,
            "selected": len(self.selected),
            "shortfall": self.shortfall,
            "by_domain": {d: [list(n) for n in neurons] for d, neurons in self.by_domain.items()},
            "unassigned": [list(n) for n in self.unassigned],
        }
        if not self.is_dape:
            return {**self.details, **common}
        dape_values = {"tau": self.tau, "tau_assign": self.tau_assign, "candidates": self.candidates}
        return {**common, **dape_values, "entropy_cutoff": self.entropy_cutoff}

    @classmethod
    def from_dict(cls, data: dict) -> SiteSelection:
        pairs = lambda rows: [(int(layer), int(neuron)) for layer, neuron in rows]  # noqa: E731
        known = {"layers", "width", "scope", "inert_layers", "k", "selected", "shortfall", "by_domain", "unassigned"}
        dape_values = {}
        if "tau" in data:
            dape_values = {
                "tau": float(data["tau"]),
                "tau_assign": float(data["tau_assign"]),
                "candidates": int(data["candidates"]),
                "entropy_cutoff": data.get("entropy_cutoff"),
            }
        return cls(
            layers=int(data["layers"]),
            width=int(data["width"]),
            scope=data["scope"],
            inert_layers=[int(layer) for layer in data["inert_layers"]],
            k=int(data["k"]),
            by_domain={d: pairs(rows) for d, rows in data["by_domain"].items()},
            unassigned=pairs(data.get("unassigned", [])),
            details={}
            if dape_values
            else {key: value for key, value in data.items() if key not in known - {"shortfall"}},
            **dape_values,
        )


@dataclass
class Selection:
    """The neuron sets of one model: the content of ``neurons.json``."""

    model: str
    domains: list[str]
    samples: dict[str, int]
    parameters: dict
    sites: dict[str, SiteSelection]
    method: str = METHOD

    @property
    def label(self) -> str:
        """The method as answers and score tables name it: an imported file's is ``external_{its label}``."""
        return f"{EXTERNAL_METHOD}_{self.parameters['label']}" if self.method == EXTERNAL_METHOD else self.method

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "method": self.method,
            "parameters": dict(self.parameters),
            "domains": list(self.domains),
            "samples": dict(self.samples),
            "sites": {name: site.to_dict() for name, site in self.sites.items()},
        }

    def to_json(self) -> str:
        """Sorted keys, one ``[layer, neuron]`` pair per line: the same selection, the same bytes."""
        text = json.dumps(self.to_dict(), sort_keys=True, indent=1)
        return re.sub(r"\[\s+(-?\d+),\s+(-?\d+)\s+\]", r"[\1, \2]", text) + "\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Selection:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SelectionError(f"neurons file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise SelectionError(f"{path}: not valid JSON ({exc})") from None
        methods = [*SELECTION_METHODS, EXTERNAL_METHOD]
        if data.get("method") not in methods:
            raise SelectionError(f"{path}: method is {data.get('method')!r}, expected one of {methods}")
        try:
            return cls(
                method=data["method"],
                model=data["model"],
                domains=list(data["domains"]),
                samples={d: int(n) for d, n in data["samples"].items()},
                parameters=dict(data["parameters"]),
                sites={name: SiteSelection.from_dict(site) for name, site in data["sites"].items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SelectionError(f"{path}: malformed neurons file ({type(exc).__name__}: {exc})") from None

    def check_sites(self, sites) -> None:
        """Every site of the neuron file exists among the model's ``sites`` with the same layers and width."""
        model_sites = {site.name: site for site in sites}
        for name, info in self.sites.items():
            site = model_sites.get(name)
            if site is None:
                raise SelectionError(
                    f"the neuron file's site '{name}' is not a site of the model ({sorted(model_sites)})"
                )
            if (site.layers, site.width) != (info.layers, info.width):
                raise SelectionError(
                    f"the neuron file's site '{name}' has {info.layers} layers x {info.width} neurons, "
                    f"the model's has {site.layers} x {site.width}"
                )

    def table(self) -> pd.DataFrame:
        """One row per selected neuron: site, layer, neuron, entropy, p per domain, domains, inert."""
        rows = []
        for name in sorted(self.sites):
            site = self.sites[name]
            if site.probabilities is None or site.entropy is None:
                raise SelectionError(f"site '{name}': the table needs the probabilities; build it from select()")
            sets = {d: set(site.by_domain[d]) for d in self.domains}
            members = {n: [d for d in self.domains if n in sets[d]] for n in site.selected}
            for (layer, neuron), domains in members.items():
                row = {"site": name, "layer": layer, "neuron": neuron, "entropy": float(site.entropy[layer, neuron])}
                for i, domain in enumerate(self.domains):
                    row[f"p_{domain}"] = float(site.probabilities[i, layer, neuron])
                row.update(domains=";".join(domains), n_domains=len(domains), inert=layer in site.inert_layers)
                rows.append(row)
        columns = [
            "site",
            "layer",
            "neuron",
            "entropy",
            *(f"p_{d}" for d in self.domains),
            "domains",
            "n_domains",
            "inert",
        ]
        return pd.DataFrame(rows, columns=columns)

    def lape(self, site: str) -> list[list[torch.Tensor]]:
        """LAPE's format for one site: per domain (in ``domains`` order), per layer, a LongTensor of neurons."""
        if site not in self.sites:
            raise SelectionError(f"no site '{site}' in the selection; sites are {sorted(self.sites)}")
        info = self.sites[site]
        export = []
        for domain in self.domains:
            per_layer = [[] for _ in range(info.layers)]
            for layer, neuron in info.by_domain[domain]:
                per_layer[layer].append(neuron)
            export.append([torch.tensor(neurons, dtype=torch.long) for neurons in per_layer])
        return export

    def save_lape(self, site: str, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.lape(site), path)
        return path


def kth_smallest(values: torch.Tensor, rate: float) -> tuple[float, int]:
    """The k-th smallest (1-based) of all ``values``, k = round(rate * count) clamped to [1, count].

    Python's ``round`` (half to even) on ``count * rate``, as the authors compute it.
    """
    flat = values.flatten()
    if flat.numel() == 0:
        raise SelectionError("cannot take a percentile of no values")
    k = min(max(round(flat.numel() * rate), 1), flat.numel())
    return float(flat.kthvalue(k).values), k


def dape(p: torch.Tensor) -> torch.Tensor:
    """Entropy over domains (dim 0) of p normalised over domains; 0/0 -> 0, 0 log 0 = 0, natural log."""
    total = p.sum(0, keepdim=True)
    q = torch.where(total > 0, p / torch.where(total > 0, total, 1.0), 0.0)
    plogp = torch.where(q > 0, q * torch.log(torch.where(q > 0, q, 1.0)), 0.0)
    return 0.0 - plogp.sum(0)  # 0.0 - x, not -x: a neuron of one domain gets +0.0, never -0.0


def stack_probabilities(
    counts: Sequence[Counts], scope: str = "all"
) -> tuple[list[str], dict[str, torch.Tensor], dict[str, str]]:
    """Domains (sorted), per site their probabilities stacked to (domains, layers, width), and per
    site the scope used: ``scope`` where the site has it, else ``all`` (a vision site sees no text
    positions, InstructBLIP's instruction site no image positions)."""
    if not counts:
        raise SelectionError("no counts given")
    by_domain: dict[str, Counts] = {}
    for c in counts:
        if c.domain in by_domain:
            raise SelectionError(
                f"domain '{c.domain}' given twice ({by_domain[c.domain].source}, {c.source}); merge shards first"
            )
        by_domain[c.domain] = c
    domains = sorted(by_domain)
    first = by_domain[domains[0]]
    for domain in domains[1:]:
        other = by_domain[domain]
        for what, mine, theirs in (
            ("model", other.model, first.model),
            ("sites", other.sites, first.sites),
            ("(site, scope) counts", other.keys, first.keys),
        ):
            if mine != theirs:
                raise SelectionError(
                    f"counts of domains '{domain}' ({other.source}) and '{domains[0]}' ({first.source}) "
                    f"differ in {what}: {mine} vs {theirs}"
                )
    scopes = {site: first.scope_for(site, scope) for site in sorted(first.sites)}
    stacked = {
        site: torch.stack([by_domain[d].site_probabilities(site, used) for d in domains])
        for site, used in scopes.items()
    }
    return domains, stacked, scopes


def select_site(
    p: torch.Tensor,
    domains: Sequence[str],
    *,
    top_rate: float = SELECTION.top_rate,
    filter_rate: float = SELECTION.filter_rate,
    assign_rate: float = SELECTION.assign_rate,
    scope: str = SELECTION.scope,
    inert_layers: Sequence[int] = (),
) -> SiteSelection:
    """Select one site's domain-specific neurons from ``p`` (domains x layers x width)."""
    if p.dim() != 3 or p.shape[0] != len(domains):
        raise SelectionError(f"probabilities must be (domains={len(domains)}, layers, width), got {tuple(p.shape)}")
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise SelectionError("probabilities must lie in [0, 1] (NaN is not allowed)")
    p = p.double()
    _, layers, width = p.shape
    entropy = dape(p)
    tau, _ = kth_smallest(p, filter_rate)
    candidate_mask = (p > tau).any(0)
    flat = candidate_mask.flatten().nonzero().squeeze(1)  # ascending flat index
    k = round(top_rate * layers * width)
    ranked = flat[torch.sort(entropy.flatten()[flat], stable=True).indices]  # stable: ties by flat index
    taken = ranked[:k]
    chosen = taken.sort().values
    tau_assign, _ = kth_smallest(p, assign_rate)
    member = p.flatten(1)[:, chosen] > tau_assign  # (domains, chosen)
    pairs = [(i // width, i % width) for i in chosen.tolist()]
    by_domain = {d: [n for n, m in zip(pairs, member[i].tolist()) if m] for i, d in enumerate(domains)}
    unassigned = [n for n, m in zip(pairs, member.any(0).tolist()) if not m]
    return SiteSelection(
        layers=layers,
        width=width,
        scope=scope,
        inert_layers=sorted(int(layer) for layer in inert_layers),
        tau=tau,
        tau_assign=tau_assign,
        candidates=len(flat),
        k=k,
        entropy_cutoff=float(entropy.flatten()[taken[-1]]) if len(taken) else None,
        by_domain=by_domain,
        unassigned=unassigned,
        probabilities=p,
        entropy=entropy,
        candidate_mask=candidate_mask,
    )


def select(
    counts: Sequence[Counts],
    *,
    top_rate: float = SELECTION.top_rate,
    filter_rate: float = SELECTION.filter_rate,
    assign_rate: float = SELECTION.assign_rate,
    scope: str = SELECTION.scope,
) -> Selection:
    """Select every site's domain-specific neurons from counts, one ``Counts`` per domain."""
    for name, rate in (("top_rate", top_rate), ("filter_rate", filter_rate), ("assign_rate", assign_rate)):
        if not 0 <= rate <= 1:
            raise SelectionError(f"{name} must lie in [0, 1], got {rate}")
    if scope not in SCOPES:
        raise SelectionError(f"scope must be one of {SCOPES}, got {scope!r}")
    domains, stacked, scopes = stack_probabilities(counts, scope)
    first = next(c for c in counts if c.domain == domains[0])
    rates = {"top_rate": top_rate, "filter_rate": filter_rate, "assign_rate": assign_rate}
    sites = {
        name: select_site(p, domains, scope=scopes[name], inert_layers=first.sites[name].inert_layers, **rates)
        for name, p in stacked.items()
    }
    for name, site in sites.items():
        if site.shortfall:
            log.warning(
                "site '%s': only %d neurons pass the filter (tau=%g), fewer than k=%d; selecting those",
                name,
                site.candidates,
                site.tau,
                site.k,
            )
    return Selection(
        model=first.model,
        domains=domains,
        samples={c.domain: c.samples for c in sorted(counts, key=lambda c: c.domain)},
        parameters={**rates, "scope": scope},
        sites=sites,
    )
