"""Statistics of neuron sets: sizes per site and domain, multi-domain membership, pairwise
overlaps, split-half stability (Jaccard overlap of selections from disjoint halves of the samples)
and the overlap of different methods' sets.

All tables are tidy (one row per site and domain, pair or membership count) and work on a
:class:`~mmneuron.selection.Selection` loaded from ``neurons.json`` as well as a fresh one.
The domain ``(any)`` stands for the union over domains. A Jaccard overlap of two empty sets is NaN.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from itertools import combinations

import pandas as pd

from .selection import Selection, SelectionError

ANY = "(any)"
COLUMNS = [
    "model",
    "site",
    "statistic",
    "domain",
    "other_domain",
    "n_domains",
    "count",
    "count_a",
    "count_b",
    "share_of_site",
    "share_of_selected",
    "jaccard",
]


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS).astype(
        {c: "Int64" for c in ("n_domains", "count", "count_a", "count_b")}
    )


def jaccard(a: set, b: set) -> float:
    union = len(a | b)
    return len(a & b) / union if union else float("nan")


def domain_sets(selection: Selection, site: str) -> dict[str, set]:
    info = selection.sites[site]
    sets = {d: set(info.by_domain[d]) for d in selection.domains}
    sets[ANY] = set(info.selected)
    return sets


def domain_counts(selection: Selection) -> pd.DataFrame:
    """Selected neurons per site and domain (and in any domain), as counts and shares of the site."""
    rows = []
    for site in sorted(selection.sites):
        info = selection.sites[site]
        for domain, neurons in domain_sets(selection, site).items():
            rows.append(
                {
                    "model": selection.model,
                    "site": site,
                    "statistic": "per_domain",
                    "domain": domain,
                    "count": len(neurons),
                    "share_of_site": len(neurons) / (info.layers * info.width),
                }
            )
    return _frame(rows)


def membership(selection: Selection) -> pd.DataFrame:
    """How many selected neurons belong to 0 (unassigned), 1, 2, ... domains, per site."""
    rows = []
    for site in sorted(selection.sites):
        info = selection.sites[site]
        sets = domain_sets(selection, site)
        tally = Counter(sum(n in sets[d] for d in selection.domains) for n in sets[ANY])
        total = len(sets[ANY])
        for n_domains in range(len(selection.domains) + 1):
            count = tally.get(n_domains, 0)
            rows.append(
                {
                    "model": selection.model,
                    "site": site,
                    "statistic": "membership",
                    "n_domains": n_domains,
                    "count": count,
                    "share_of_site": count / (info.layers * info.width),
                    "share_of_selected": count / total if total else float("nan"),
                }
            )
    return _frame(rows)


def overlaps(selection: Selection) -> pd.DataFrame:
    """Neurons shared by each pair of domains, per site, with their Jaccard overlap."""
    rows = []
    for site in sorted(selection.sites):
        sets = domain_sets(selection, site)
        for a, b in combinations(selection.domains, 2):
            rows.append(
                {
                    "model": selection.model,
                    "site": site,
                    "statistic": "overlap",
                    "domain": a,
                    "other_domain": b,
                    "count": len(sets[a] & sets[b]),
                    "count_a": len(sets[a]),
                    "count_b": len(sets[b]),
                    "jaccard": jaccard(sets[a], sets[b]),
                }
            )
    return _frame(rows)


def _difference(a: Selection, b: Selection) -> str:
    """What two selections to be compared differ in (model, domains or sites), or "" when nothing."""
    for what, mine, theirs in (
        ("model", a.model, b.model),
        ("domains", a.domains, b.domains),
        ("sites", sorted(a.sites), sorted(b.sites)),
    ):
        if mine != theirs:
            return f"{what}: {mine} vs {theirs}"
    return ""


def stability(half_a: Selection, half_b: Selection) -> pd.DataFrame:
    """Jaccard overlap per site and domain of two selections made on disjoint halves of the samples."""
    difference = _difference(half_a, half_b)
    if difference:
        raise SelectionError(f"split halves differ in {difference}")
    rows = []
    for site in sorted(half_a.sites):
        sets_a, sets_b = domain_sets(half_a, site), domain_sets(half_b, site)
        for domain in sets_a:
            a, b = sets_a[domain], sets_b[domain]
            rows.append(
                {
                    "model": half_a.model,
                    "site": site,
                    "statistic": "stability",
                    "domain": domain,
                    "count": len(a & b),
                    "count_a": len(a),
                    "count_b": len(b),
                    "jaccard": jaccard(a, b),
                }
            )
    return _frame(rows)


def stats_table(selection: Selection, halves: tuple[Selection, Selection] | None = None) -> pd.DataFrame:
    """Every statistic above in one long table (``statistic`` names the part)."""
    parts = [domain_counts(selection), membership(selection), overlaps(selection)]
    if halves is not None:
        parts.append(stability(*halves))
    return pd.concat([part for part in parts if len(part)], ignore_index=True)[COLUMNS]


METHOD_COLUMNS = ["model", "site", "domain", "method", "other_method", "count", "count_a", "count_b", "jaccard"]


def method_overlaps(selections: Mapping[str, Selection]) -> pd.DataFrame:
    """Jaccard overlap of the neuron sets of each pair of methods (``{method: selection}``, in the
    given order), per site and domain and for the union over domains (``(any)``)."""
    names = list(selections)
    first = selections[names[0]] if names else None
    for name in names[1:]:
        difference = _difference(first, selections[name])
        if difference:
            raise SelectionError(f"methods {names[0]} and {name} differ in {difference}")
    rows = []
    for site in sorted(first.sites) if first else []:
        sets = {name: domain_sets(selection, site) for name, selection in selections.items()}
        for domain in [*first.domains, ANY]:
            for a, b in combinations(names, 2):
                left, right = sets[a][domain], sets[b][domain]
                rows.append(
                    {
                        "model": first.model,
                        "site": site,
                        "domain": domain,
                        "method": a,
                        "other_method": b,
                        "count": len(left & right),
                        "count_a": len(left),
                        "count_b": len(right),
                        "jaccard": jaccard(left, right),
                    }
                )
    return pd.DataFrame(rows, columns=METHOD_COLUMNS).astype({c: "Int64" for c in ("count", "count_a", "count_b")})
