"""DAPE selection: hand-computed values, a brute-force reference, the authors' rule, edge cases, outputs."""

from __future__ import annotations

import json
import math
import random
import re

import pandas as pd
import pytest
import torch

from mmneuron.cli import main
from mmneuron.counts import Counts
from mmneuron.selection import Selection, SelectionError, dape, kth_smallest, select, select_site


def counts_from(domain, active, tokens=10, site="s", inert=(), model="tiny", scopes=("all",)):
    active = torch.tensor(active, dtype=torch.int64)
    layers, width = active.shape
    sites = {site: {"layers": layers, "width": width, "inert_layers": list(inert)}}
    return Counts(
        model,
        domain,
        sites,
        {(site, sc): active for sc in scopes},
        {(site, sc): torch.full((layers,), tokens, dtype=torch.int64) for sc in scopes},
        samples=3,
    )


# p for domain a: [[1, .5, 0], [.2, 0, 0]]; domain b: [[0, .5, 0], [.8, 0, 0]]
HAND = [counts_from("a", [[10, 5, 0], [2, 0, 0]]), counts_from("b", [[0, 5, 0], [8, 0, 0]])]
H_28 = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))


def test_dape_hand_values():
    p = torch.tensor([[0.3, 1.0, 0.5, 0.0], [0.1, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    h = dape(p)
    assert h[0].item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), abs=1e-15)
    assert h[1].item() == 0.0 and math.copysign(1, h[1].item()) == 1  # one domain only: +0, not -0
    assert h[2].item() == pytest.approx(math.log(2), abs=1e-15)
    assert h[3].item() == 0.0  # never fires: 0/0 -> 0
    assert dape(torch.full((5, 2), 0.4, dtype=torch.float64)).tolist() == pytest.approx([math.log(5)] * 2)


def test_kth_smallest_is_one_based_and_clamped():
    values = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])
    assert kth_smallest(values, 0.4) == (2.0, 2)
    assert kth_smallest(values, 0.5) == (2.0, 2)  # round(2.5) == 2: Python rounds half to even, as the authors
    assert kth_smallest(values, 0.0) == (1.0, 1)  # k = 0 -> the smallest
    assert kth_smallest(values, 1.0) == (5.0, 5)


def test_hand_computed_selection():
    sel = select(HAND, top_rate=0.5, filter_rate=0.75, assign_rate=0.75)
    site = sel.sites["s"]
    # 12 p values sorted: seven 0, .2, .5, .5, .8, 1; k = 9 -> tau = .5; candidates: (0,0) and (1,0)
    assert (site.tau, site.tau_assign, site.candidates, site.k) == (0.5, 0.5, 2, 3)
    assert site.by_domain == {"a": [(0, 0)], "b": [(1, 0)]}
    assert site.shortfall == 1 and site.selected == [(0, 0), (1, 0)]  # not padded to k = 3
    assert site.entropy_cutoff == pytest.approx(H_28)
    assert site.entropy[0].tolist() == pytest.approx([0.0, math.log(2), 0.0])
    table = sel.table()
    assert table[["layer", "neuron", "domains", "n_domains"]].values.tolist() == [[0, 0, "a", 1], [1, 0, "b", 1]]
    assert table["entropy"].tolist() == pytest.approx([0.0, H_28])
    assert table["p_a"].tolist() == [1.0, 0.2] and table["p_b"].tolist() == [0.0, 0.8]


def test_domain_without_neurons_is_listed_empty():
    site = select(HAND, top_rate=1 / 6, filter_rate=0.75, assign_rate=0.75).sites["s"]
    assert site.k == 1 and site.by_domain == {"a": [(0, 0)], "b": []}
    assert json.loads(select(HAND, top_rate=1 / 6, filter_rate=0.75).to_json())["sites"]["s"]["by_domain"]["b"] == []


def test_silent_neurons_are_never_selected():
    # most p are 0, so tau = 0; LAPE's top-k would pad with the silent neurons (entropy 0 via 0/0)
    counts = [counts_from("a", [[0, 0, 0, 3, 0, 0, 0, 0]]), counts_from("b", [[0, 0, 0, 3, 1, 0, 0, 0]])]
    site = select(counts, top_rate=1.0, filter_rate=0.8, assign_rate=0.8).sites["s"]  # 13 of 16 p are 0
    assert site.tau == 0.0 and site.candidates == 2 and site.k == 8 and site.shortfall == 6
    assert site.selected == [(0, 3), (0, 4)] and site.by_domain == {"a": [(0, 3)], "b": [(0, 3), (0, 4)]}
    nothing = select([counts_from("a", [[0, 0]]), counts_from("b", [[0, 0]])], top_rate=1.0).sites["s"]
    assert nothing.candidates == 0 and nothing.selected == [] and nothing.entropy_cutoff is None


def test_ties_break_by_flat_index():
    # every firing neuron is specific to one domain: all entropies are 0
    counts = [counts_from("a", [[5, 0, 5, 0], [5, 0, 0, 0]]), counts_from("b", [[0, 5, 0, 5], [0, 5, 0, 0]])]
    site = select(counts, top_rate=0.5, filter_rate=0.5, assign_rate=0.5).sites["s"]
    assert site.candidates == 6 and site.selected == [(0, 0), (0, 1), (0, 2), (0, 3)]


def _multi_site_counts(domain: str, seed: int) -> Counts:
    """Counts of an InstructBLIP-like site set: lm (all, image, text), vision and query (all,
    image), qformer (all, text); the scopes of a site differ, so a scope mix-up changes the result."""
    generator = torch.Generator().manual_seed(seed)
    scopes = {
        "lm": ("all", "image", "text"),
        "vision": ("all", "image"),
        "query": ("all", "image"),
        "qformer": ("all", "text"),
    }
    sites, active, tokens = {}, {}, {}
    for site, site_scopes in scopes.items():
        sites[site] = {"layers": 2, "width": 6, "inert_layers": []}
        for scope in site_scopes:
            active[site, scope] = torch.randint(0, 21, (2, 6), generator=generator)
            tokens[site, scope] = torch.full((2,), 20, dtype=torch.int64)
    return Counts("tiny", domain, sites, active, tokens, samples=4)


@pytest.mark.parametrize("scope", ["image", "text"])
def test_a_scope_applies_to_the_sites_that_have_it(scope, tmp_path):
    """``text`` on a vision site and ``image`` on the instruction site fall back to ``all`` there;
    each site's selection is the one of its own scope's probabilities, and the scope is recorded."""
    counts = [_multi_site_counts(d, seed) for seed, d in enumerate(("a", "b", "c"))]
    rates = {"top_rate": 0.25, "filter_rate": 0.5, "assign_rate": 0.5}
    selection = select(counts, **rates, scope=scope)
    for name, site in selection.sites.items():
        used = scope if (name, scope) in counts[0].active else "all"
        p = torch.stack([c.site_probabilities(name, used) for c in counts])
        expected = select_site(p, ["a", "b", "c"], **rates, scope=used)
        assert (site.scope, site.by_domain, site.tau) == (used, expected.by_domain, expected.tau), name
    assert {name: site.scope for name, site in selection.sites.items()} == {
        "lm": scope,
        "vision": "image" if scope == "image" else "all",
        "query": "image" if scope == "image" else "all",
        "qformer": "text" if scope == "text" else "all",
    }
    saved = json.loads(selection.save(tmp_path / "neurons.json").read_text())
    assert saved["parameters"]["scope"] == scope
    assert {name: site["scope"] for name, site in saved["sites"].items()} == {
        name: site.scope for name, site in selection.sites.items()
    }


def test_rate_edges():
    assert select(HAND, top_rate=0.05).sites["s"].k == 0  # round(0.3) = 0: none selected, reported
    assert select(HAND, top_rate=0.05).sites["s"].selected == []
    none_pass = select(HAND, top_rate=1.0, filter_rate=1.0).sites["s"]  # tau = the maximum
    assert none_pass.candidates == 0 and none_pass.shortfall == 6
    everything = select(HAND, top_rate=1.0, filter_rate=0.0, assign_rate=0.0).sites["s"]  # tau = the minimum, 0
    assert everything.selected == [(0, 0), (0, 1), (1, 0)]
    for bad in ({"top_rate": 1.5}, {"filter_rate": -0.1}, {"scope": "audio"}):
        with pytest.raises(SelectionError):
            select(HAND, **bad)


def test_assign_rate_above_filter_rate_can_leave_neurons_unassigned():
    site = select(HAND, top_rate=0.5, filter_rate=0.75, assign_rate=1.0).sites["s"]
    assert site.by_domain == {"a": [], "b": []} and site.unassigned == [(0, 0), (1, 0)]
    assert select(HAND, top_rate=0.5, filter_rate=0.75, assign_rate=1.0).table()["n_domains"].tolist() == [0, 0]


def reference(p, top_rate, filter_rate, assign_rate):
    """The rule written out with loops, over nested lists p[domain][layer][neuron]."""
    domains, layers, width = len(p), len(p[0]), len(p[0][0])
    values = sorted(x for d in p for row in d for x in row)

    def percentile(rate):
        k = min(max(round(rate * len(values)), 1), len(values))
        return values[k - 1]

    tau, tau_assign = percentile(filter_rate), percentile(assign_rate)
    ranked = []
    for layer in range(layers):
        for neuron in range(width):
            column = [p[d][layer][neuron] for d in range(domains)]
            if max(column) > tau:
                total = sum(column)
                entropy = -sum(x / total * math.log(x / total) for x in column if x > 0)
                ranked.append((entropy, layer * width + neuron, layer, neuron))
    ranked.sort()
    chosen = ranked[: round(top_rate * layers * width)]
    by_domain = [sorted((l, n) for _, _, l, n in chosen if p[d][l][n] > tau_assign) for d in range(domains)]
    return by_domain, sorted((l, n) for _, _, l, n in chosen)


def random_counts(rng, domains, layers, width, sparsity):
    counts = []
    for d in range(domains):
        tokens = rng.randint(50, 500)
        active = [
            [0 if rng.random() < sparsity else rng.randint(0, tokens) for _ in range(width)] for _ in range(layers)
        ]
        counts.append(counts_from(f"d{d}", active, tokens=tokens))
    return counts


@pytest.mark.parametrize("seed", range(16))
def test_matches_brute_force_reference(seed):
    rng = random.Random(seed)
    domains, layers, width = rng.randint(2, 5), rng.randint(1, 4), rng.randint(3, 40)
    counts = random_counts(rng, domains, layers, width, sparsity=rng.choice([0.0, 0.5, 0.9]))
    rates = {
        "top_rate": rng.choice([0.01, 0.1, 0.3, 0.8]),
        "filter_rate": rng.choice([0.5, 0.8, 0.95]),
        "assign_rate": rng.choice([0.5, 0.8, 0.95]),
    }
    sel = select(counts, **rates)
    p = [c.probabilities()["s"].tolist() for c in sorted(counts, key=lambda c: c.domain)]
    by_domain, selected = reference(p, **rates)
    assert [sel.sites["s"].by_domain[d] for d in sel.domains] == by_domain
    assert sel.sites["s"].selected == selected


def authors_rule(p, top_rate=0.01, filter_rate=0.95, assign_rate=0.95):
    """LAPE's selection as published (layout layers x width x domains, top-k with inf for excluded)."""
    probs = p.permute(1, 2, 0)
    normed = probs / probs.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    entropy = -torch.sum(normed * torch.where(normed > 0, normed.log(), 0), dim=-1)
    flat = probs.flatten()
    tau = flat.kthvalue(round(len(flat) * filter_rate)).values.item()
    entropy[(probs > tau).sum(dim=-1) == 0] = torch.inf
    _, index = entropy.flatten().topk(round(entropy.numel() * top_rate), largest=False)
    rows, cols = index // entropy.size(1), index % entropy.size(1)
    bar = flat.kthvalue(round(len(flat) * assign_rate)).values.item()
    member = probs[rows, cols] > bar  # selected x domains
    return [sorted((int(r), int(c)) for r, c, m in zip(rows, cols, member[:, d]) if m) for d in range(p.shape[0])]


def test_matches_the_authors_rule_where_it_is_well_defined():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(5, 6, 200, generator=gen, dtype=torch.float64) ** 3  # enough candidates, no ties
    domains = [f"d{i}" for i in range(5)]
    for top_rate in (0.01, 0.02):
        site = select_site(p, domains, top_rate=top_rate)
        assert site.shortfall == 0
        assert [site.by_domain[d] for d in domains] == authors_rule(p, top_rate)


def test_scope_selects_its_counts():
    image = [counts_from(d, a, scopes=("all", "image")) for d, a in (("a", [[9, 0, 1, 5]]), ("b", [[0, 9, 1, 5]]))]
    for c in image:  # the image scope sees the third neuron only in domain a
        c.active["s", "image"] = (
            torch.tensor([[0, 0, 9, 0]]) if c.domain == "a" else torch.zeros(1, 4, dtype=torch.long)
        )
    assert select(image, top_rate=0.25, filter_rate=0.75).sites["s"].selected == [(0, 0)]
    chosen = select(image, top_rate=0.25, filter_rate=0.75, scope="image")
    assert chosen.sites["s"].selected == [(0, 2)] and chosen.sites["s"].scope == "image"
    assert chosen.parameters["scope"] == "image"


def test_inputs_that_do_not_fit_together():
    with pytest.raises(SelectionError, match="domain 'a' given twice"):
        select([HAND[0], HAND[0]])
    with pytest.raises(SelectionError, match="differ in sites"):
        select([HAND[0], counts_from("b", [[1, 2, 3, 4]])])
    with pytest.raises(SelectionError, match="differ in model"):
        select([HAND[0], counts_from("b", [[0, 5, 0], [8, 0, 0]], model="other")])


def test_json_is_deterministic_and_round_trips(tmp_path):
    rng = random.Random(7)
    counts = random_counts(rng, 4, 3, 30, 0.3)
    first = select(counts, top_rate=0.1)
    again = select(list(reversed(counts)), top_rate=0.1)
    a, b = first.save(tmp_path / "a.json"), again.save(tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()
    data = json.loads(a.read_text())
    assert data["method"] == "dape" and data["domains"] == ["d0", "d1", "d2", "d3"]
    assert data["parameters"] == {"top_rate": 0.1, "filter_rate": 0.95, "assign_rate": 0.95, "scope": "all"}
    assert data["samples"] == {"d0": 3, "d1": 3, "d2": 3, "d3": 3}
    assert set(data["sites"]["s"]) >= {
        "layers",
        "width",
        "scope",
        "inert_layers",
        "tau",
        "tau_assign",
        "candidates",
        "k",
        "selected",
        "by_domain",
    }
    loaded = Selection.load(a)
    assert loaded.to_json() == first.to_json()
    with pytest.raises(SelectionError, match="needs the probabilities"):
        loaded.table()


def test_lape_export(tmp_path):
    counts = [
        counts_from("a", [[9, 0, 0], [0, 9, 0]]),
        counts_from("b", [[0, 0, 9], [0, 0, 0]]),
        counts_from("c", [[0, 0, 0], [0, 0, 0]]),
    ]
    sel = select(counts, top_rate=0.5, filter_rate=0.5, assign_rate=0.5)
    export = torch.load(sel.save_lape("s", tmp_path / "lape_s.pt"))
    assert len(export) == 3 and all(len(per_layer) == 2 for per_layer in export)
    assert all(t.dtype == torch.long and t.dim() == 1 for per_layer in export for t in per_layer)
    assert [[t.tolist() for t in per_layer] for per_layer in export] == [[[0], [1]], [[2], []], [[], []]]


def test_one_layer_site_and_inert_flag():
    counts = [counts_from("a", [[9, 1, 0, 4]], inert=[0]), counts_from("b", [[0, 1, 9, 4]], inert=[0])]
    sel = select(counts, top_rate=0.5, filter_rate=0.5)
    assert sel.sites["s"].selected == [(0, 0), (0, 2)] and sel.sites["s"].inert_layers == [0]
    assert sel.table()["inert"].tolist() == [True, True]


def test_select_command_end_to_end(tmp_path):
    rng = random.Random(3)
    paths, halves = [], {"a": [], "b": []}
    for d, c in enumerate(random_counts(rng, 3, 2, 50, 0.2)):
        for shard in range(2):  # two shards per domain: merged by the command
            part = Counts(
                c.model,
                c.domain,
                c.sites,
                {k: v // 2 + shard * (v % 2) for k, v in c.active.items()},
                {k: v // 2 + shard * (v % 2) for k, v in c.tokens.items()},
                samples=2,
            )
            paths.append(part.save(tmp_path / "counts" / f"d{d}_{shard}.safetensors"))
            halves["ab"[shard]].append(paths[-1])
    out = tmp_path / "res" / "neurons.json"
    code = main(
        [
            "select",
            "--counts",
            *map(str, paths),
            "--out",
            str(out),
            "--top-rate",
            "0.1",
            "--half-a",
            *map(str, halves["a"]),
            "--half-b",
            *map(str, halves["b"]),
        ]
    )
    assert code == 0
    sel = Selection.load(out)
    assert sel.samples == {"d0": 4, "d1": 4, "d2": 4} and sel.parameters["top_rate"] == 0.1
    table = pd.read_csv(out.with_suffix(".csv"))
    assert len(table) == len(sel.sites["s"].selected) > 0
    assert len(torch.load(out.parent / "lape_s.pt")) == 3
    stats = pd.read_csv(out.parent / "neuron_stats.csv")
    assert set(stats["statistic"]) == {"per_domain", "membership", "overlap", "stability"}
    names = {p.name for p in (out.parent / "figures").iterdir()}
    assert names == {
        f"{stem}.{ext}" for stem in ("neuron_layers", "neuron_overlap", "dape_histogram") for ext in ("png", "pdf")
    }


def test_select_command_refuses_halves_missing_a_domain(tmp_path, capsys):
    paths = [c.save(tmp_path / f"{c.domain}.safetensors") for c in HAND]
    out = tmp_path / "neurons.json"
    code = main(
        [
            "select",
            "--counts",
            *map(str, paths),
            "--out",
            str(out),
            "--half-a",
            str(paths[0]),
            "--half-b",
            *map(str, paths),
        ]
    )
    assert code == 1
    assert "mmneuron select: --half-a covers domains ['a'], --counts ['a', 'b']" in capsys.readouterr().err
    assert not out.exists()
    assert main(["select", "--counts", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 1
    assert re.match("mmneuron select: counts file not found: .*missing.safetensors", capsys.readouterr().err)


def test_figures_draw_empty_and_one_layer_sites(tmp_path):
    from mmneuron.plots.neurons import plot_all

    counts = [counts_from("a", [[9, 1, 0, 4]], inert=[0]), counts_from("b", [[0, 1, 9, 4]], inert=[0])]
    paths = plot_all(select(counts, top_rate=0.1), tmp_path)  # k = 0: nothing selected
    assert sorted(p.suffix for p in paths) == [".pdf", ".pdf", ".pdf", ".png", ".png", ".png"]
    assert all(p.stat().st_size > 1000 for p in paths)
