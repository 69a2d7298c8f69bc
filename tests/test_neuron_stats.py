"""Statistics of neuron sets and split-half stability, on hand-made selections."""

from __future__ import annotations

import math

import pytest

from mmneuron.neuron_stats import ANY, domain_counts, membership, overlaps, stability, stats_table
from mmneuron.selection import Selection, SelectionError, SiteSelection


def make_selection(by_domain: dict, unassigned=(), layers=2, width=5, site="lm") -> Selection:
    domains = sorted(by_domain)
    info = SiteSelection(
        layers=layers,
        width=width,
        scope="all",
        inert_layers=[],
        tau=0.5,
        tau_assign=0.5,
        candidates=10,
        k=4,
        entropy_cutoff=0.1,
        by_domain=by_domain,
        unassigned=list(unassigned),
    )
    return Selection(
        model="tiny", domains=domains, samples={d: 1 for d in domains}, parameters={"top_rate": 0.4}, sites={site: info}
    )


SEL = make_selection({"a": [(0, 1), (0, 2), (1, 0)], "b": [(0, 2), (1, 4)], "c": []}, unassigned=[(1, 3)])


def rows(frame, **where):
    for column, value in where.items():
        frame = frame[frame[column] == value]
    return frame


def test_domain_counts_and_shares():
    table = domain_counts(SEL)
    got = {r.domain: (r.count, r.share_of_site) for r in table.itertuples()}
    assert got == {"a": (3, 0.3), "b": (2, 0.2), "c": (0, 0.0), ANY: (5, 0.5)}


def test_membership_counts_each_neuron_once():
    table = membership(SEL)
    got = {r.n_domains: (r.count, r.share_of_selected) for r in table.itertuples()}
    # (1,3): none; (0,1), (1,0), (1,4): one; (0,2): two
    assert got == {0: (1, 0.2), 1: (3, 0.6), 2: (1, 0.2), 3: (0, 0.0)}
    assert table["count"].sum() == 5


def test_pairwise_overlaps():
    table = overlaps(SEL)
    assert len(table) == 3
    ab = rows(table, domain="a", other_domain="b").iloc[0]
    assert (ab["count"], ab["count_a"], ab["count_b"], ab["jaccard"]) == (1, 3, 2, 0.25)
    assert rows(table, domain="a", other_domain="c").iloc[0]["jaccard"] == 0.0
    assert math.isnan(overlaps(make_selection({"a": [], "b": []}))["jaccard"].iloc[0])


def test_stability_jaccard_per_domain():
    other = make_selection({"a": [(0, 1), (0, 3)], "b": [(0, 2), (1, 4)], "c": []})
    table = stability(SEL, other)
    got = {r.domain: (r.count, r.count_a, r.count_b) for r in table.itertuples()}
    assert got == {"a": (1, 3, 2), "b": (2, 2, 2), "c": (0, 0, 0), ANY: (3, 5, 4)}
    jac = dict(zip(table["domain"], table["jaccard"]))
    assert jac["a"] == 0.25 and jac["b"] == 1.0 and jac[ANY] == 0.5 and math.isnan(jac["c"])


def test_stability_refuses_mismatched_halves():
    with pytest.raises(SelectionError, match="differ in domains"):
        stability(SEL, make_selection({"a": [], "b": []}))
    with pytest.raises(SelectionError, match="differ in sites"):
        stability(SEL, make_selection({"a": [], "b": [], "c": []}, site="vision"))


def test_stats_table_is_long_and_works_on_a_loaded_file(tmp_path):
    loaded = Selection.load(SEL.save(tmp_path / "neurons.json"))
    table = stats_table(loaded, halves=(loaded, loaded))
    assert list(table["statistic"].unique()) == ["per_domain", "membership", "overlap", "stability"]
    assert rows(table, statistic="stability", domain="a")["jaccard"].item() == 1.0
    assert str(table["count"].dtype) == "Int64"
    assert set(stats_table(loaded)["statistic"]) == {"per_domain", "membership", "overlap"}
