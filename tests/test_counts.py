"""The activation-counts file: round trip, validation errors, probabilities, merging."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from safetensors.torch import save_file

from mmneuron.cli import main
from mmneuron.counts import Counts, CountsError, SiteInfo, load_many, merge

SITES = {"lm": {"layers": 2, "width": 3}, "vision": {"layers": 1, "width": 2, "inert_layers": [0]}}


def make_counts(domain="ad", model="tiny", scale=1, sites=SITES, scopes=("all", "image", "text"), **extra) -> Counts:
    active, tokens = {}, {}
    for site, info in sites.items():
        layers, width = info["layers"], info["width"]
        for i, scope in enumerate(scopes):
            base = torch.arange(layers * width, dtype=torch.int64).reshape(layers, width) % 4
            active[site, scope] = base * scale + i
            tokens[site, scope] = torch.full((layers,), 10 * scale, dtype=torch.int64)
    return Counts(model=model, domain=domain, sites=sites, active=active, tokens=tokens, samples=5 * scale, **extra)


def test_round_trip_keeps_everything(tmp_path):
    counts = make_counts(skipped=[{"sample_id": "x1", "reason": "corrupt image"}], settings={"prompt": "<image>\n{q}"})
    loaded = Counts.load(counts.save(tmp_path / "c.safetensors"))
    assert (loaded.model, loaded.domain, loaded.samples) == ("tiny", "ad", 5)
    assert loaded.sites == {"lm": SiteInfo(2, 3), "vision": SiteInfo(1, 2, (0,))}
    assert loaded.skipped == counts.skipped and loaded.settings == counts.settings
    assert loaded.versions == counts.versions and set(loaded.versions) == {"mmneuron", "torch", "transformers"}
    assert loaded.keys == counts.keys
    for key in counts.keys:
        assert torch.equal(loaded.active[key], counts.active[key]) and loaded.active[key].dtype == torch.int64
        assert torch.equal(loaded.tokens[key], counts.tokens[key])


def test_file_layout_and_bytes_are_stable(tmp_path):
    counts = make_counts()
    first = counts.save(tmp_path / "a.safetensors").read_bytes()
    assert counts.save(tmp_path / "b.safetensors").read_bytes() == first
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as handle:
        assert {"lm/image/active", "vision/text/tokens"} <= set(handle.keys())
        meta = handle.metadata()
    assert json.loads(meta["sites"])["vision"] == {"layers": 1, "width": 2, "inert_layers": [0]}
    assert meta["samples"] == "5"


def test_probabilities_divide_and_guard_zero_tokens():
    counts = make_counts()
    counts.tokens["lm", "all"] = torch.tensor([4, 0])
    counts.active["lm", "all"] = torch.tensor([[0, 1, 4], [0, 0, 0]])
    probs = counts.probabilities("all")
    assert probs["lm"].dtype == torch.float64
    assert probs["lm"].tolist() == [[0.0, 0.25, 1.0], [0.0, 0.0, 0.0]]
    assert probs["vision"].shape == (1, 2)


def test_probabilities_of_a_missing_scope_name_the_site():
    counts = make_counts(scopes=("all", "image"))
    with pytest.raises(CountsError, match="site 'lm' has no 'text' counts"):
        counts.probabilities("text")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CountsError, match="not found.*nope.safetensors"):
        Counts.load(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file")
    with pytest.raises(CountsError, match="junk.safetensors: not a readable safetensors"):
        Counts.load(junk)
    partial = tmp_path / "partial.safetensors"
    save_file(
        {"lm/all/active": torch.zeros(2, 3, dtype=torch.int64), "lm/all/tokens": torch.ones(2, dtype=torch.int64)},
        str(partial),
        metadata={"model": "tiny", "domain": "ad"},
    )
    with pytest.raises(CountsError, match=r"partial.safetensors: metadata lacks \['samples'"):
        Counts.load(partial)


def _write(path, tensors, sites):
    meta = {
        "model": "tiny",
        "domain": "ad",
        "samples": "1",
        "skipped": "[]",
        "sites": json.dumps(sites),
        "settings": "{}",
        "versions": "{}",
    }
    save_file(tensors, str(path), metadata=meta)
    return path


def test_shapes_must_match_sites(tmp_path):
    good = {"lm/all/active": torch.zeros(2, 3, dtype=torch.int64), "lm/all/tokens": torch.ones(2, dtype=torch.int64)}
    path = _write(tmp_path / "wide.safetensors", good, {"lm": {"layers": 2, "width": 4}})
    with pytest.raises(
        CountsError, match=r"wide.safetensors: 'lm/all/active' has shape \(2, 3\), but 'sites' says \(2, 4\)"
    ):
        Counts.load(path)
    path = _write(tmp_path / "nosite.safetensors", good, {"vision": {"layers": 2, "width": 3}})
    with pytest.raises(CountsError, match="nosite.safetensors: tensors for sites"):
        Counts.load(path)
    path = _write(
        tmp_path / "half.safetensors", {"lm/all/active": good["lm/all/active"]}, {"lm": {"layers": 2, "width": 3}}
    )
    with pytest.raises(CountsError, match="half.safetensors: 'active' and 'tokens' tensors differ"):
        Counts.load(path)
    path = _write(
        tmp_path / "odd.safetensors", {**good, "lm/all/extra": torch.zeros(1)}, {"lm": {"layers": 2, "width": 3}}
    )
    with pytest.raises(CountsError, match="odd.safetensors: unexpected tensor 'lm/all/extra'"):
        Counts.load(path)


def test_active_cannot_exceed_tokens():
    with pytest.raises(CountsError, match="'lm/all/active' must lie between 0 and 'lm/all/tokens'"):
        Counts(
            "tiny",
            "ad",
            {"lm": {"layers": 1, "width": 2}},
            {("lm", "all"): torch.tensor([[3, 1]])},
            {("lm", "all"): torch.tensor([2])},
            samples=1,
        )


def test_merge_sums_and_records_parts(tmp_path):
    a = Counts.load(
        make_counts(skipped=[{"sample_id": "a", "reason": "r"}], settings={"shard": 0}).save(tmp_path / "a.safetensors")
    )
    b = Counts.load(
        make_counts(scale=2, skipped=[{"sample_id": "b", "reason": "r"}], settings={"shard": 1}).save(
            tmp_path / "b.safetensors"
        )
    )
    merged = merge([a, b])
    assert merged.samples == 15
    assert [s["sample_id"] for s in merged.skipped] == ["a", "b"]
    for key in a.keys:
        assert torch.equal(merged.active[key], a.active[key] + b.active[key])
        assert torch.equal(merged.tokens[key], a.tokens[key] + b.tokens[key])
    shards = merged.settings["merged"]
    assert [s["settings"] for s in shards] == [{"shard": 0}, {"shard": 1}]
    assert shards[0]["source"].endswith("a.safetensors") and shards[1]["samples"] == 10
    assert Counts.load(merged.save(tmp_path / "m.safetensors")).settings == merged.settings


@pytest.mark.parametrize(
    ("other", "difference"),
    [
        (make_counts(model="other"), "model differ"),
        (make_counts(domain="med"), "domain differ"),
        (make_counts(sites={**SITES, "lm": {"layers": 2, "width": 4}}), "sites differ"),
        (make_counts(scopes=("all",)), r"\(site, scope\) tensors differ"),
    ],
)
def test_merge_refuses_parts_that_differ(tmp_path, other, difference):
    first = Counts.load(make_counts().save(tmp_path / "first.safetensors"))
    second = Counts.load(other.save(tmp_path / "second.safetensors"))
    with pytest.raises(CountsError, match=rf"cannot merge .*second.safetensors with .*first.safetensors: {difference}"):
        merge([first, second])


def test_merge_marks_mixed_versions():
    a, b = make_counts(versions={"torch": "2.13.0"}), make_counts(versions={"torch": "2.12.0"})
    assert merge([a, b]).versions == {"torch": "mixed: 2.12.0, 2.13.0"}


def test_load_many_groups_files_by_domain(tmp_path):
    paths = [
        make_counts("med").save(tmp_path / "m0.safetensors"),
        make_counts("ad").save(tmp_path / "a.safetensors"),
        make_counts("med", scale=3).save(tmp_path / "m1.safetensors"),
    ]
    loaded = load_many(paths)
    assert list(loaded) == ["ad", "med"] and loaded["med"].samples == 20


def test_merge_command(tmp_path):
    paths = [make_counts(scale=s).save(tmp_path / f"s{s}.safetensors") for s in (1, 2)]
    assert main(["merge", *map(str, paths), "--out", str(tmp_path / "out" / "all.safetensors")]) == 0
    assert Counts.load(tmp_path / "out" / "all.safetensors").samples == 15


def test_merge_command_reports_refusal(tmp_path, capsys):
    paths = [make_counts().save(tmp_path / "ad.safetensors"), make_counts("med").save(tmp_path / "med.safetensors")]
    assert main(["merge", *map(str, paths), "--out", str(tmp_path / "all.safetensors")]) == 1
    assert re.fullmatch(r"mmneuron merge: cannot merge .*med.safetensors .*domain differ .*\n", capsys.readouterr().err)
    assert not (tmp_path / "all.safetensors").exists()


def _recorded(chunks, source=None) -> Counts:
    """Counts with moments of a two-layer language site, recorded over ``chunks`` of random outputs."""
    from torch import nn

    from mmneuron.hooks.record import ActivationRecorder
    from mmneuron.models.sites import ResolvedSite

    modules = (nn.Identity(), nn.Identity())
    site = ResolvedSite("lm", "language", 4, (), ("lm.0", "lm.1"), modules)
    with ActivationRecorder([site]) as recorder:
        for outputs, image, text in chunks:
            recorder.set_masks({"language": {"image": image, "text": text}})
            for module, output in zip(modules, outputs):
                module(output)
    sums, squares, maxima = recorder.moment_results()
    return Counts(
        "tiny", "ad", {"lm": site.info()}, *recorder.results(), samples=len(chunks), source=source,
        sums=sums, squares=squares, maxima=maxima,
    )  # fmt: skip


def _random_chunks(seed: int, count: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for _ in range(count):
        real = torch.rand(3, 6, generator=generator) > 0.2
        image = torch.rand(3, 6, generator=generator) > 0.5
        # bfloat16 outputs, as a GPU model gives: float64 sums of them are exact but for rounding order
        outputs = [(3 * torch.randn(3, 6, 4, generator=generator)).bfloat16() for _ in range(2)]
        chunks.append((outputs, real & image, real & ~image))
    return chunks


def test_merged_shards_equal_a_single_pass(tmp_path):
    chunks = _random_chunks(0, 5)
    single = _recorded(chunks)
    shards = [_recorded(chunks[:2]), _recorded(chunks[2:])]
    merged = merge([Counts.load(shard.save(tmp_path / f"s{i}.safetensors")) for i, shard in enumerate(shards)])
    assert merged.has_moments and merged.keys == single.keys
    for key in single.keys:
        assert torch.equal(merged.active[key], single.active[key])
        assert torch.equal(merged.tokens[key], single.tokens[key])
        assert torch.equal(merged.maxima[key], single.maxima[key])
        assert torch.allclose(merged.sums[key], single.sums[key], rtol=1e-12, atol=1e-12)
        assert torch.allclose(merged.squares[key], single.squares[key], rtol=1e-12, atol=1e-12)
    # the derived statistics against the values themselves
    values = torch.cat([torch.stack(outputs)[:, image | text].double() for outputs, image, text in chunks], 1)
    assert torch.allclose(merged.site_means("lm"), values.mean(1))
    assert torch.allclose(merged.site_variances("lm"), values.var(1, correction=0))
    assert torch.equal(merged.site_maxima("lm"), values.amax(1))


def test_moments_round_trip_as_float64(tmp_path):
    counts = _recorded(_random_chunks(1, 2))
    path = counts.save(tmp_path / "c.safetensors")
    loaded = Counts.load(path)
    for mine, theirs in ((loaded.sums, counts.sums), (loaded.squares, counts.squares), (loaded.maxima, counts.maxima)):
        assert all(torch.equal(mine[key], theirs[key]) and mine[key].dtype == torch.float64 for key in counts.keys)
    assert counts.save(tmp_path / "d.safetensors").read_bytes() == path.read_bytes()


def test_a_file_without_moments_still_selects_by_dape(tmp_path):
    from mmneuron.selection import select

    # written the old way: counts tensors only, with safetensors' own writer
    fresh = [make_counts("ad"), make_counts("med")]
    fresh[1].active = {key: fresh[1].tokens[key].unsqueeze(1) - active for key, active in fresh[1].active.items()}
    paths = []
    for old in fresh:
        domain = old.domain
        tensors = {f"{s}/{c}/{kind}": getattr(old, kind)[s, c] for s, c in old.keys for kind in ("active", "tokens")}
        meta = {"model": "tiny", "domain": domain, "samples": "5", "skipped": "[]", "settings": "{}", "versions": "{}"}
        paths.append(tmp_path / f"{domain}.safetensors")
        save_file(tensors, str(paths[-1]), metadata={**meta, "sites": json.dumps(SITES)})
    loaded = [Counts.load(path) for path in paths]
    assert not any(c.has_moments for c in loaded)
    rates = {"top_rate": 0.5, "filter_rate": 0.5}
    expected = select(fresh, **rates).to_dict()["sites"]
    assert expected["lm"]["selected"] > 0 and select(loaded, **rates).to_dict()["sites"] == expected
    with pytest.raises(CountsError, match=r"ad.safetensors: holds counts only, no activation moments"):
        loaded[0].site_means("lm")
    with pytest.raises(CountsError, match="with and without activation moments"):
        recorded = _recorded(_random_chunks(2, 1))
        merge([recorded, dataclasses.replace(recorded, sums=None, squares=None, maxima=None)])


def test_mean_activations_pool_the_domains_positions():
    from mmneuron.counts import mean_activations

    parts = {}
    for domain, seed in (("ad", 3), ("med", 4), ("rs", 5)):
        chunks = _random_chunks(seed, 2)
        parts[domain] = (_recorded(chunks), chunks)
        parts[domain][0].domain = domain
    counts = [c for c, _ in parts.values()]
    for domains, scope in ((["ad", "rs"], "image"), (None, "all")):
        chosen = [chunks for d, (_, chunks) in parts.items() if domains is None or d in domains]
        picked = [torch.stack(o)[:, i if scope == "image" else i | t] for chunks in chosen for o, i, t in chunks]
        expected = torch.cat([v.double() for v in picked], 1).mean(1)
        assert torch.allclose(mean_activations(counts, scope, domains)["lm"], expected)
    with pytest.raises(CountsError, match=r"no counts for domain\(s\) \['doc'\]"):
        mean_activations(counts, "all", ["ad", "doc"])
