"""How many samples are enough: the selection repeated on growing numbers of shards of the
statistics samples, and its overlap with the selection from every shard, per method.

Per domain the shards are taken in the order given (the workflow's: half a's shards, then half
b's), and the first 1, 2, 4, ... of them (and the last count, if not a power of two) are merged:
counts and moments add up exactly, so c merged shards are the statistics of those samples. At each
count every method selects, with the same settings, and its sets are compared with the same
method's on all the shards: Jaccard per site and domain, and of the union over domains (``(any)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from mmneuron.counts import Counts, merge
from mmneuron.neuron_stats import ANY, domain_sets, jaccard
from mmneuron.selection import SelectionError
from mmneuron.selectors import select

COLUMNS = ["model", "method", "shards", "samples", "site", "domain", "count", "count_full", "jaccard"]


def shard_counts(available: int, limit: int | None = None) -> list[int]:
    """1, 2, 4, ... up to ``limit`` (default: all ``available``) shards, the last always included."""
    if available < 1:
        raise SelectionError("the sample-count curve needs at least one shard per domain")
    last = min(available, limit or available)
    steps, count = [], 1
    while count < last:
        steps.append(count)
        count *= 2
    return [*steps, last]


def sample_curve(
    shards: Mapping[str, Sequence[Counts]], methods: Sequence[str], limit: int | None = None, **settings
) -> pd.DataFrame:
    """The curve's table (:data:`COLUMNS`) for ``shards`` (``{domain: [counts of each shard]}``)."""
    sizes = {domain: len(parts) for domain, parts in shards.items()}
    if len(set(sizes.values())) > 1:
        raise SelectionError(f"the domains have different numbers of shards: {sizes}")
    steps = shard_counts(min(sizes.values(), default=0), limit)
    merged = {
        count: [merge(parts[:count]) for _, parts in sorted(shards.items())] for count in {*steps, max(sizes.values())}
    }
    rows = []
    for method in tqdm(methods, desc="sample curve", unit="method"):
        full = select(method, merged[max(sizes.values())], **settings)
        for count in steps:
            part = select(method, merged[count], **settings)
            for site in sorted(full.sites):
                theirs, mine = domain_sets(full, site), domain_sets(part, site)
                for domain in [*full.domains, ANY]:
                    rows.append(
                        {
                            "model": full.model,
                            "method": method,
                            "shards": count,
                            "samples": sum(part.samples.values()),
                            "site": site,
                            "domain": domain,
                            "count": len(mine[domain]),
                            "count_full": len(theirs[domain]),
                            "jaccard": jaccard(mine[domain], theirs[domain]),
                        }
                    )
    return pd.DataFrame(rows, columns=COLUMNS)
