"""The recording hooks: exact masked counts, scopes, hook removal, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mmneuron.hooks import record
from mmneuron.hooks.record import ActivationRecorder, RecordingError, scopes
from mmneuron.models.sites import ResolvedSite, resolve_sites
from mmneuron.models.tiny import build_tiny, image_prompt


def _site(name="lm", positions="language", layers=2, width=5) -> ResolvedSite:
    modules = tuple(nn.Identity() for _ in range(layers))
    names = tuple(f"{name}.{layer}" for layer in range(layers))
    return ResolvedSite(name, positions, width, (), names, modules)


def test_counts_match_a_loop_over_positions():
    site = _site()
    generator = torch.Generator().manual_seed(0)
    calls = []
    with ActivationRecorder([site]) as recorder:
        for batch, length in ((2, 7), (3, 4)):
            real = torch.rand(batch, length, generator=generator) > 0.3
            image = torch.rand(batch, length, generator=generator) > 0.5
            recorder.set_masks({"language": {"image": real & image, "text": real & ~image}})
            outputs = [torch.randn(batch, length, site.width, generator=generator) for _ in site.modules]
            for module, output in zip(site.modules, outputs):
                module(output)
            calls.append((real, image, outputs))
    active, tokens = recorder.results()

    expected = {scope: torch.zeros(2, site.width, dtype=torch.int64) for scope in ("image", "text")}
    seen = {scope: torch.zeros(2, dtype=torch.int64) for scope in ("image", "text")}
    for real, image, outputs in calls:
        for layer, output in enumerate(outputs):
            for b in range(real.shape[0]):
                for t in range(real.shape[1]):
                    if real[b, t]:
                        scope = "image" if image[b, t] else "text"
                        expected[scope][layer] += (output[b, t] > 0).long()
                        seen[scope][layer] += 1
    expected["all"], seen["all"] = expected["image"] + expected["text"], seen["image"] + seen["text"]
    assert set(active) == set(tokens) == {("lm", scope) for scope in scopes("language")}
    for scope in ("all", "image", "text"):
        assert torch.equal(active["lm", scope], expected[scope]) and active["lm", scope].dtype == torch.int64
        assert torch.equal(tokens["lm", scope], seen[scope])


def test_unmasked_kinds_count_every_position_and_duplicate_their_scope():
    vision, query = _site("vision", "vision", layers=1, width=3), _site("query", "query", layers=1, width=3)
    output = torch.tensor([[[1.0, -1.0, 0.0], [2.0, 3.0, -0.0]], [[0.5, 0.0, 1e-30], [-2.0, 1.0, 4.0]]])
    with ActivationRecorder([vision, query]) as recorder:
        recorder.set_masks({})  # vision and query positions need no masks
        vision.modules[0](output)
        query.modules[0](output[:1])
    active, tokens = recorder.results()
    assert active["vision", "all"].tolist() == [[3, 2, 2]] and tokens["vision", "all"].tolist() == [4]
    assert torch.equal(active["vision", "image"], active["vision", "all"])
    assert active["query", "image"].tolist() == [[2, 1, 0]] and tokens["query", "image"].tolist() == [2]
    assert set(active) == {("vision", "all"), ("vision", "image"), ("query", "all"), ("query", "image")}


def test_chunked_counting_is_exact(monkeypatch):
    site = _site(width=6)
    generator = torch.Generator().manual_seed(1)
    output = torch.randn(4, 9, site.width, generator=generator)
    real = torch.rand(4, 9, generator=generator) > 0.2
    image = torch.rand(4, 9, generator=generator) > 0.5
    results = []
    for entries in (2**26, 12):  # 12 entries: two rows of width 6 per matmul
        monkeypatch.setattr(record, "_CHUNK_ENTRIES", entries)
        with ActivationRecorder([site]) as recorder:
            recorder.set_masks({"language": {"image": real & image, "text": real & ~image}})
            for module in site.modules:
                module(output)
        results.append((*recorder.results(), *recorder.moment_results()))
    assert all(torch.equal(results[0][0][key], results[1][0][key]) for key in results[0][0])
    for whole, chunked in zip(results[0][2:], results[1][2:]):  # float64 sums in another order; maxima exact
        assert all(torch.allclose(whole[key], chunked[key], rtol=1e-12, atol=1e-12) for key in whole)
    assert all(torch.equal(results[0][4][key], results[1][4][key]) for key in results[0][4])


@pytest.fixture(scope="module")
def llava():
    model, processor = build_tiny("llava")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    inputs = processor(images=[image], text=[image_prompt("llava", "<image>\nIs it red?")], return_tensors="pt")
    return model, inputs


def _hooks(sites) -> int:
    return sum(len(module._forward_hooks) for site in sites for module in site.modules)


def _language_masks(model, inputs) -> dict:
    real = inputs["attention_mask"].bool()
    image = inputs["input_ids"] == model.config.image_token_id
    return {"language": {"image": real & image, "text": real & ~image}}


def test_hooks_are_removed_after_the_context_and_after_an_error(llava):
    model, inputs = llava
    sites = resolve_sites(model)
    with ActivationRecorder(sites) as recorder:
        assert _hooks(sites) == sum(site.layers for site in sites)
        recorder.set_masks(_language_masks(model, inputs))
        with torch.no_grad():
            model(**inputs)
    assert _hooks(sites) == 0
    with pytest.raises(KeyError), ActivationRecorder(sites):
        raise KeyError("boom")
    assert _hooks(sites) == 0


def test_a_forward_with_a_cache_does_not_fit_the_masks(llava):
    model, inputs = llava
    sites = resolve_sites(model, ["lm"])
    with ActivationRecorder(sites) as recorder:
        recorder.set_masks(_language_masks(model, inputs))
        message = r"site 'lm' layer 0 .* cover \d+ positions but the module output has 1 .*generate"
        with pytest.raises(RecordingError, match=message):
            model.generate(**inputs, max_new_tokens=2)
    assert _hooks(sites) == 0


def test_language_positions_need_masks(llava):
    model, inputs = llava
    with (
        ActivationRecorder(resolve_sites(model, ["lm"])),
        pytest.raises(RecordingError, match="no masks for language positions"),
        torch.no_grad(),
    ):
        model(**inputs)


def test_bad_masks_and_uneven_layers_are_refused():
    site = _site()
    recorder = ActivationRecorder([site])
    with pytest.raises(ValueError, match="unknown kind of positions 'pixels'"):
        recorder.set_masks({"pixels": None})
    with pytest.raises(ValueError, match=r"language positions need masks for \('image', 'text'\)"):
        recorder.set_masks({"language": {"image": torch.ones(3, dtype=torch.bool)}})
    everything = torch.ones(3, dtype=torch.bool)
    with pytest.raises(ValueError, match="language masks overlap"):
        recorder.set_masks({"language": {"image": everything, "text": everything}})
    with pytest.raises(ValueError, match="sites given twice"):
        ActivationRecorder([site, site])
    with recorder:
        everything, nothing = torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)
        recorder.set_masks({"language": {"image": everything, "text": nothing}})
        site.modules[0](torch.ones(2, site.width))
        with pytest.raises(RecordingError, match="does not end in the site's width 5"):
            site.modules[1](torch.ones(2, 3))
    with pytest.raises(RecordingError, match=r"site 'lm': its layers ran different numbers of times: \[1, 0\]"):
        recorder.results()


def _record(site, chunks, moments=True):
    """Record ``chunks`` of (outputs per layer, image mask, text mask) with one recorder."""
    with ActivationRecorder([site], moments=moments) as recorder:
        for outputs, image, text in chunks:
            recorder.set_masks({"language": {"image": image, "text": text}})
            for module, output in zip(site.modules, outputs):
                module(output)
    return recorder


def _chunks(seed, shapes, width, layers=2):
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for batch, length in shapes:
        real = torch.rand(batch, length, generator=generator) > 0.3
        image = torch.rand(batch, length, generator=generator) > 0.5
        outputs = [torch.randn(batch, length, width, generator=generator) for _ in range(layers)]
        chunks.append((outputs, real & image, real & ~image))
    return chunks


def test_moments_match_a_loop_over_positions():
    site = _site()
    chunks = _chunks(2, ((2, 7), (3, 4)), site.width)
    chunks[0][2][:] = False  # the first chunk has no text positions,
    chunks[1][2][:] = False  # nor the second: text's maxima stay -inf and its sums 0
    sums, squares, maxima = _record(site, chunks).moment_results()
    values = {scope: [[[] for _ in range(site.width)] for _ in range(2)] for scope in ("image", "text", "all")}
    for outputs, image, text in chunks:
        for layer, output in enumerate(outputs):
            for b, t in zip(*torch.nonzero(image | text, as_tuple=True)):
                for scope in ("image" if image[b, t] else "text", "all"):
                    for neuron in range(site.width):
                        values[scope][layer][neuron].append(float(output[b, t, neuron]))
    for scope, per_layer in values.items():
        for layer in range(2):
            for neuron in range(site.width):
                seen = per_layer[layer][neuron]
                assert sums["lm", scope][layer, neuron] == pytest.approx(sum(seen), abs=1e-12)
                assert squares["lm", scope][layer, neuron] == pytest.approx(sum(v * v for v in seen), abs=1e-12)
                assert maxima["lm", scope][layer, neuron] == (max(seen) if seen else -float("inf"))
    assert sums["lm", "all"].dtype == torch.float64 and maxima["lm", "all"].dtype == torch.float64


def test_counts_only_recording_gives_the_same_counts_and_no_moments():
    site = _site()
    chunks = _chunks(3, ((2, 5),), site.width)
    with_moments, counts_only = _record(site, chunks), _record(site, chunks, moments=False)
    for mine, theirs in zip(with_moments.results(), counts_only.results()):
        assert all(torch.equal(mine[key], theirs[key]) for key in mine)
    with pytest.raises(RecordingError, match="counts only"):
        counts_only.moment_results()
