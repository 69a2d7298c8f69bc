"""The selectors on small constructed statistics against hand-computed selections; matched sizes;
the method overlaps against brute force; the sample-count curve on constructed shards."""

from __future__ import annotations

import json
from itertools import combinations

import pytest
import torch

from mmneuron.cli import main
from mmneuron.counts import Counts, CountsError, merge
from mmneuron.neuron_stats import ANY, method_overlaps
from mmneuron.sample_curve import sample_curve, shard_counts
from mmneuron.selection import Selection, SelectionError, SiteSelection
from mmneuron.selection import select as select_dape
from mmneuron.selectors import miner, select
from mmneuron.selectors.common import SiteStatistics

SITES = {"lm": {"layers": 2, "width": 3}}
# active counts of 4 tokens per domain, layer, neuron (quarters: exact in binary); min-max per layer (MINER's
# prob score):  ad L0 [0, .5, 1]  L1 [0, 1, .5]        med L0 [1, 0, .5]  L1 [.5, 0, 1]
P = {"ad": [[0, 2, 4], [1, 3, 2]], "med": [[4, 0, 2], [2, 1, 3]]}
PROB_ONLY = {"prob": 1.0, "mean": 0.0, "max": 0.0}


def counts_of(p: dict, moments: bool = False, model: str = "tiny", sites=SITES, tokens: int = 10) -> list[Counts]:
    out = []
    for domain, active in p.items():
        active = torch.tensor(active, dtype=torch.int64)
        layers = active.shape[0]
        extra = {}
        if moments:  # sums 10 * mean: the mean of a neuron is its count / 2 here, its maximum the count
            key = ("lm", "all")
            extra = {"sums": {key: active.double() * 5}, "squares": {key: active.double() ** 2 * 10}}
            extra["maxima"] = {key: active.double()}
        out.append(
            Counts(
                model,
                domain,
                sites,
                {("lm", "all"): active},
                {("lm", "all"): torch.full((layers,), tokens)},
                4,
                **extra,
            )
        )
    return out


def _sets(selection: Selection, site: str = "lm") -> dict[str, set]:
    return {d: set(n) for d, n in selection.sites[site].by_domain.items()}


def test_margin_takes_each_domains_largest_positive_margin():
    p = {"ad": [[9, 2, 5, 1]], "med": [[1, 8, 5, 0]], "rs": [[2, 1, 4, 0]]}
    sites = {"lm": {"layers": 1, "width": 4}}
    # margins: ad [.7, -.6, 0, .1]; med [-.8, .6, 0, -.1]; rs [-.7, -.7, -.1, -.1]
    chosen = select("margin", counts_of(p, sites=sites), top_rate=0.75)  # K = 3: one per domain
    assert _sets(chosen) == {"ad": {(0, 0)}, "med": {(0, 1)}, "rs": set()}  # rs has no positive margin
    site = chosen.sites["lm"]
    assert site.shortfall == 1 and site.details["k_by_domain"] == {"ad": 1, "med": 1, "rs": 1}
    two = select("margin", counts_of(p, sites=sites), top_rate=1.0)  # K = 4: one each (4 // 3)
    assert _sets(two)["ad"] == {(0, 0)}
    with pytest.raises(SelectionError, match="at least two domains"):
        select("margin", counts_of({"ad": [[1, 2, 3, 4]]}, sites=sites))


@pytest.mark.parametrize(
    ("method", "top_rate", "expected"),
    [
        # K = 2. adaptive: summed scores [1, .5, 1.5 | .5, 1, 1.5]: neurons (0,2) and (1,2), each to its best domain
        ("miner_adaptive", 2 / 6, {"ad": {(0, 2)}, "med": {(1, 2)}}),
        # LA_MU: K // D = 1 per domain over both layers (ties: the lowest flat index)
        ("miner_la_mu", 2 / 6, {"ad": {(0, 2)}, "med": {(0, 0)}}),
        # LU_MA: K // L = 1 per layer, the best (domain, neuron): L0 ad's 2 (ties med's 0), L1 ad's 1
        ("miner_lu_ma", 2 / 6, {"ad": {(0, 2), (1, 1)}, "med": set()}),
        # uniform: K // (D L) = 1 per layer and domain
        ("miner_uniform", 4 / 6, {"ad": {(0, 2), (1, 1)}, "med": {(0, 0), (1, 2)}}),
    ],
)
def test_miner_strategies_by_hand(method, top_rate, expected):
    chosen = select(method, counts_of(P, tokens=4), top_rate=top_rate, weights=PROB_ONLY)
    assert _sets(chosen) == expected
    assert chosen.method == method and chosen.parameters["weights"] == PROB_ONLY


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        # per domain its own k_d (ad 3, med 1) in the strategy's shape
        ("LA_MU", {"ad": {(0, 1), (0, 2), (1, 1)}, "med": {(0, 0)}}),
        # k_d // L per layer, the remainder to the layer with the best next neuron (ties: the lowest layer)
        ("uniform", {"ad": {(0, 1), (0, 2), (1, 1)}, "med": {(0, 0)}}),
        # summed-score order 2, 5, 0, 4, 1, 3; best domains ad, med, med, ad, ad, med
        ("adaptive", {"ad": {(0, 1), (0, 2), (1, 1)}, "med": {(1, 2)}}),
        # budgets 2 and 2 per layer; med is full after L0's (0, 0), so L1 gives ad (1, 1) and (1, 2)
        ("LU_MA", {"ad": {(0, 2), (1, 1), (1, 2)}, "med": {(0, 0)}}),
    ],
)
def test_miner_strategies_with_matched_sizes_by_hand(strategy, expected):
    c = counts_of(P, tokens=4)
    statistics = SiteStatistics("lm", ["ad", "med"], torch.stack([x.site_probabilities("lm") for x in c]), c, "all")
    target = SiteSelection(2, 3, "all", [], 4, {"ad": [(0, 0), (0, 1), (1, 0)], "med": [(1, 1)]})
    chosen, details = miner.selector(strategy)(statistics, target, PROB_ONLY)
    assert {d: set(n) for d, n in chosen.items()} == expected
    assert details["k_by_domain"] == {"ad": 3, "med": 1} and details["shortfall"] == 0


def test_miner_scores_mix_the_normalised_moments():
    c = counts_of(P, moments=True, tokens=4)
    statistics = SiteStatistics("lm", ["ad", "med"], torch.stack([x.site_probabilities("lm") for x in c]), c, "all")
    means = torch.tensor([P["ad"], P["med"]], dtype=torch.float64) / 2
    low, high = means.amin(-1, keepdim=True), means.amax(-1, keepdim=True)
    expected = 0.25 * (means - low) / (high - low) * 2  # mean and max normalise alike here: 0.25 + 0.25
    mixed = miner.importance(statistics, miner.check_weights({"mean": 0.25, "max": 0.25}))
    assert torch.allclose(mixed, expected.double())
    with pytest.raises(SelectionError, match="MINER weights"):
        miner.check_weights({"mean": -1})
    with pytest.raises(CountsError, match="holds counts only"):
        select("miner_uniform", counts_of(P, tokens=4), top_rate=0.5)  # the default mix needs the moments


def test_matched_sizes_follow_dape_per_site_and_domain():
    generator = torch.Generator().manual_seed(3)
    sites = {"lm": {"layers": 3, "width": 10}}
    p = {d: torch.randint(0, 11, (3, 10), generator=generator).tolist() for d in ("ad", "med", "rs")}
    counts = counts_of(p, moments=True, sites=sites)
    rates = {"top_rate": 0.3, "filter_rate": 0.5, "assign_rate": 0.5}
    dape = select_dape(counts, **rates).sites["lm"]
    assert sum(len(n) for n in dape.by_domain.values()) > 3
    for method in ("miner_adaptive", "miner_la_mu", "miner_lu_ma", "miner_uniform", "random", "margin"):
        chosen = select(method, counts, **rates, match_sizes=True).sites["lm"]
        for domain, neurons in chosen.by_domain.items():
            assert len(neurons) <= len(dape.by_domain[domain]), (method, domain)
            if method in ("miner_la_mu", "miner_uniform", "random"):  # never short: any neuron may be taken
                assert len(neurons) == len(dape.by_domain[domain]), (method, domain)
        wanted = sum(len(n) for n in dape.by_domain.values())
        assert chosen.shortfall == wanted - sum(len(n) for n in chosen.by_domain.values())
        assert chosen.details["k_by_domain"] == {d: len(n) for d, n in dape.by_domain.items()}
    drawn = select("random", counts, **rates, match_sizes=True).sites["lm"]
    for domain, neurons in dape.by_domain.items():  # random: as many per layer as DAPE's set
        assert sorted(layer for layer, _ in drawn.by_domain[domain]) == sorted(layer for layer, _ in neurons)


def test_random_method_draws_distinct_seeded_neurons():
    counts = counts_of(P, tokens=4)
    first, again = (select("random", counts, top_rate=1.0, seed=4) for _ in range(2))
    other = select("random", counts, top_rate=1.0, seed=5)
    assert first.to_json() == again.to_json() and first.to_json() != other.to_json()
    for neurons in first.sites["lm"].by_domain.values():  # K // D = 3 distinct neurons of the site
        assert len(set(neurons)) == 3 and all(0 <= l < 2 and 0 <= n < 3 for l, n in neurons)


def test_dape_through_the_selectors_is_selection_select(tmp_path):
    generator = torch.Generator().manual_seed(1)
    sites = {"lm": {"layers": 2, "width": 8}}
    counts = counts_of({d: torch.randint(0, 11, (2, 8), generator=generator).tolist() for d in "abc"}, sites=sites)
    assert select("dape", counts, top_rate=0.4).to_json() == select_dape(counts, top_rate=0.4).to_json()
    margin = select("margin", counts, top_rate=0.4, match_sizes=True)
    loaded = Selection.load(margin.save(tmp_path / "margin.json"))
    assert loaded.method == "margin" and loaded.to_json() == margin.to_json()
    data = json.loads(margin.to_json())
    assert data["parameters"] == {
        "top_rate": 0.4,
        "scope": "all",
        "match_sizes": True,
        "filter_rate": 0.95,
        "assign_rate": 0.95,
    }
    assert "tau" not in data["sites"]["lm"] and data["sites"]["lm"]["k_by_domain"]
    (tmp_path / "bad.json").write_text(json.dumps({**data, "method": "nope"}))
    with pytest.raises(SelectionError, match="method is 'nope'"):
        Selection.load(tmp_path / "bad.json")


def test_method_overlaps_against_brute_force():
    counts = counts_of(P, tokens=4)
    selections = {m: select(m, counts, top_rate=4 / 6, weights=PROB_ONLY) for m in ("dape", "margin", "miner_la_mu")}
    table = method_overlaps(selections)
    assert len(table) == 3 * 3  # pairs x (ad, med, any)
    for a, b in combinations(selections, 2):
        for domain in ("ad", "med", ANY):
            sets = []
            for name in (a, b):
                site = selections[name].sites["lm"]
                sets.append(set(site.selected) if domain == ANY else set(site.by_domain[domain]))
            union = sets[0] | sets[1]
            row = table[(table["method"] == a) & (table["other_method"] == b) & (table["domain"] == domain)].iloc[0]
            if union:
                assert row.jaccard == len(sets[0] & sets[1]) / len(union)
            else:
                assert row.jaccard != row.jaccard  # NaN
            assert (row["count"], row.count_a, row.count_b) == (len(sets[0] & sets[1]), len(sets[0]), len(sets[1]))


def test_sample_curve_on_constructed_shards():
    assert shard_counts(5) == [1, 2, 4, 5] and shard_counts(4) == [1, 2, 4] and shard_counts(8, 3) == [1, 2, 3]
    generator = torch.Generator().manual_seed(2)
    sites = {"lm": {"layers": 2, "width": 6}}
    shards = {
        d: [
            counts_of({d: torch.randint(0, 11, (2, 6), generator=generator).tolist()}, sites=sites)[0] for _ in range(3)
        ]
        for d in ("ad", "med")
    }
    table = sample_curve(shards, ["dape", "margin"], top_rate=0.3, filter_rate=0.5, assign_rate=0.5)
    assert sorted(set(table["shards"])) == [1, 2, 3]
    for method in ("dape", "margin"):
        full = select(
            method, [merge(parts) for parts in shards.values()], top_rate=0.3, filter_rate=0.5, assign_rate=0.5
        )
        first = select(method, [parts[0] for parts in shards.values()], top_rate=0.3, filter_rate=0.5, assign_rate=0.5)
        rows = table[(table["method"] == method)].set_index(["shards", "domain"])
        for domain in ("ad", "med"):
            a, b = set(first.sites["lm"].by_domain[domain]), set(full.sites["lm"].by_domain[domain])
            expected = len(a & b) / len(a | b) if a | b else float("nan")
            assert rows.loc[(1, domain), "jaccard"] == pytest.approx(expected, nan_ok=True)
            assert rows.loc[(3, domain), "jaccard"] in (1.0,) or not b  # all shards: the full selection itself
        assert rows.loc[(1, "ad"), "samples"] == 8 and rows.loc[(3, "ad"), "samples"] == 24
    with pytest.raises(SelectionError, match="different numbers of shards"):
        sample_curve({"ad": shards["ad"], "med": shards["med"][:2]}, ["dape"])


def test_the_commands_write_method_files(tmp_path):
    paths = [c.save(tmp_path / f"{c.domain}.safetensors") for c in counts_of(P, moments=True, tokens=4)]
    counts = ["--counts", *map(str, paths)]
    for method in ("dape", "miner_uniform"):
        out = tmp_path / method / "neurons.json"
        assert main(["select", *counts, "--out", str(out), "--method", method, "--top-rate", "0.67"]) == 0
        assert Selection.load(out).method == method
    assert (tmp_path / "dape" / "figures" / "dape_histogram.png").is_file()
    assert not (tmp_path / "miner_uniform" / "figures" / "dape_histogram.png").exists()
    files = [f"{m}={tmp_path / m / 'neurons.json'}" for m in ("dape", "miner_uniform")]
    out = tmp_path / "overlaps.csv"
    assert main(["compare-methods", "--neurons", *files, "--out", str(out), "--figure", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o.png").is_file() and len(out.read_text().splitlines()) == 1 + 3
    assert (
        main(["compare-methods", "--neurons", f"margin={tmp_path / 'dape' / 'neurons.json'}", "--out", str(out)]) == 1
    )
    curve = tmp_path / "curve.csv"
    args = ["sample-curve", "--shards", *map(str, paths), "--methods", "dape", "margin", "--out", str(curve)]
    assert main([*args, "--figure", str(tmp_path / "curve")]) == 0 and (tmp_path / "curve.png").is_file()
