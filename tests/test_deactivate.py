"""Deactivation: exactly the chosen neurons, in prefill and decoding, removed without a trace."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

from mmneuron.hooks.deactivate import Deactivation, DeactivationError, Intervention, deactivate
from mmneuron.hooks.record import ActivationRecorder
from mmneuron.models.sites import image_prompt, image_token_id, resolve_sites
from mmneuron.models.tiny import build_tiny

QUESTIONS = ["What colour is the car?", "How many people are in the picture on the left?"]


def _image(i: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _inputs(arch: str, processor):
    prompts = [image_prompt(arch, f"<image>\n{q}") for q in QUESTIONS]
    inputs = processor(images=[_image(0), _image(1, (56, 30))], text=prompts, padding=True, return_tensors="pt")
    inputs.pop("labels", None)
    return inputs


@pytest.fixture(scope="module")
def llava_next():
    model, processor = build_tiny("llava_next")
    return model, processor, resolve_sites(model), _inputs("llava_next", processor)


@contextlib.contextmanager
def capture(sites):
    """An independent hook: every output of every site's modules, per (site, layer), per call."""
    seen = {(site.name, layer): [] for site in sites for layer in range(site.layers)}
    handles = [
        module.register_forward_hook(lambda m, a, out, key=(site.name, layer): seen[key].append(out.detach().clone()))
        for site in sites
        for layer, module in enumerate(site.modules)
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _forward(model, inputs, sites, neurons=None):
    context = Deactivation(sites, neurons) if neurons else contextlib.nullcontext()
    with torch.no_grad(), context, capture(sites) as seen:
        logits = model(**inputs).logits
    return logits, {key: outputs[0] for key, outputs in seen.items()}


def _hook_count(sites) -> int:
    return sum(len(module._forward_hooks) for site in sites for module in site.modules)


def test_only_chosen_neurons_change_upstream_of_the_last_layer(llava_next):
    model, _, sites, inputs = llava_next
    clean_logits, clean = _forward(model, inputs, sites)
    chosen = [3, 7, 20]
    logits, seen = _forward(model, inputs, sites, {"lm": [(1, n) for n in chosen]})
    others = [n for n in range(64) if n not in chosen]
    for key, value in seen.items():
        if key == ("lm", 1):
            assert torch.all(value[..., chosen] == 0)
            assert torch.equal(value[..., others], clean[key][..., others])
            assert clean[key][..., chosen].abs().sum() > 0  # there was something to zero
        else:  # vision, projector and the first LM layer run before: bit-identical
            assert torch.equal(value, clean[key]), key
    assert not torch.equal(logits, clean_logits)


def test_several_sites_at_once_and_an_independent_recorder(llava_next):
    model, _, sites, inputs = llava_next
    _, clean = _forward(model, inputs, sites)
    neurons = {"vision": [(0, 1), (0, 2), (1, 9)], "projector": [(0, 0), (0, 5)], "lm": [(0, 4), (1, 60)]}
    _, seen = _forward(model, inputs, sites, neurons)
    for site, pairs in neurons.items():
        for layer, neuron in pairs:
            assert torch.all(seen[site, layer][..., neuron] == 0), (site, layer, neuron)
    rest = [n for n in range(64) if n not in (1, 2)]
    assert torch.equal(seen["vision", 0][..., rest], clean["vision", 0][..., rest])  # first layer: untouched otherwise
    assert not torch.equal(seen["lm", 1], clean["lm", 1])  # downstream layers do change

    real = inputs["attention_mask"].bool()
    image = (inputs["input_ids"] == image_token_id(model)) & real
    with torch.no_grad(), Deactivation(sites, neurons), ActivationRecorder(sites) as recorder:
        recorder.set_masks({"language": {"image": image, "text": real & ~image}})
        model(**inputs)
    active, tokens = recorder.results()
    for site, pairs in neurons.items():
        assert tokens[site, "all"].min() > 0
        for layer, neuron in pairs:
            assert active[site, "all"][layer, neuron] == 0, (site, layer, neuron)
    assert active["vision", "all"][0, 0] > 0 and active["lm", "all"][0, 5] > 0  # others stay active


def test_prefill_and_every_decoding_step(llava_next):
    model, _, sites, inputs = llava_next
    neurons = {"lm": [(0, 2), (1, 11), (1, 12)], "vision": [(1, 0)]}
    with torch.no_grad(), Deactivation(sites, neurons), capture(sites) as seen:
        output = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 4
    for layer, neuron in neurons["lm"]:
        calls = seen["lm", layer]
        assert [call.shape[1] for call in calls] == [inputs["input_ids"].shape[1], 1, 1, 1]  # prefill, 3 steps
        assert all(torch.all(call[..., neuron] == 0) for call in calls)
        assert all(call.abs().sum() > 0 for call in calls)
    assert len(seen["vision", 1]) == 1 and torch.all(seen["vision", 1][0][..., 0] == 0)


def test_leaving_restores_bit_identical_logits_also_after_an_error(llava_next):
    model, _, sites, inputs = llava_next
    with torch.no_grad():
        before = model(**inputs).logits
        with deactivate(model, {"lm": [(0, 1), (1, 1)], "projector": [(0, 3)]}) as active:
            assert active.count == 3
            assert _hook_count(sites) == 3
            during = model(**inputs).logits
        after = model(**inputs).logits
        with pytest.raises(RuntimeError, match="boom"), Deactivation(sites, {"vision": [(0, 1)]}):
            raise RuntimeError("boom")
        again = model(**inputs).logits
    assert not torch.equal(before, during)
    assert torch.equal(before, after) and torch.equal(before, again)
    assert _hook_count(sites) == 0


def test_a_value_other_than_zero_and_an_empty_set(llava_next):
    model, _, sites, inputs = llava_next
    clean_logits, _ = _forward(model, inputs, sites)
    with torch.no_grad(), Deactivation(sites, {"lm": [(1, 5)]}, Intervention(value=2.5)), capture(sites) as seen:
        model(**inputs)
    assert torch.all(seen["lm", 1][0][..., 5] == 2.5)
    logits, _ = _forward(model, inputs, sites, {"lm": []})
    assert torch.equal(logits, clean_logits)
    with deactivate(model, {}) as nothing:
        assert nothing.count == 0 and _hook_count(sites) == 0


def test_bad_neuron_sets_are_refused(llava_next):
    _, _, sites, _ = llava_next
    with pytest.raises(DeactivationError, match="no site 'qformer'"):
        Deactivation(sites, {"qformer": [(0, 1)]})
    with pytest.raises(DeactivationError, match="site 'lm'.*outside its 2 layers x 64"):
        Deactivation(sites, {"lm": [(2, 0)]})
    with pytest.raises(DeactivationError, match="outside"):
        Deactivation(sites, {"projector": [(0, 32)]})
    active = Deactivation(sites, {"lm": [(0, 0)]})
    with active, pytest.raises(DeactivationError, match="already active"):
        active.__enter__()
    assert _hook_count(sites) == 0


def test_instructblip_qformer_and_query_sites():
    model, processor = build_tiny("instructblip")
    sites = resolve_sites(model)
    inputs = _inputs("instructblip", processor)
    neurons = {"qformer": [(0, 3)], "query": [(0, 3), (1, 8)], "vision": [(1, 2)], "lm": [(1, 6)]}
    with torch.no_grad(), Deactivation(sites, neurons), capture(sites) as seen:
        model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    for site, pairs in neurons.items():
        for layer, neuron in pairs:
            assert seen[site, layer] and all(torch.all(call[..., neuron] == 0) for call in seen[site, layer])
    assert len(seen["lm", 1]) == 3  # prefill and two decoding steps
    assert _hook_count(sites) == 0


def _raw_and_seen(model, sites, deactivation, run):
    """Every call's output of every site's modules before the deactivation's hooks (raw) and after (seen)."""
    with torch.no_grad(), capture(sites) as raw, deactivation, capture(sites) as seen:
        run()
    return raw, seen


def _scopes(model, inputs):
    """Image and text positions by hand: the image token's positions, and the other real ones."""
    real = inputs["attention_mask"].bool()
    image = (inputs["input_ids"] == image_token_id(model)) & real
    return {"image": image, "text": real & ~image}


def test_mean_and_scale_interventions_against_the_modules_own_outputs(llava_next):
    model, _, sites, inputs = llava_next
    neurons = {"lm": [(0, 3), (1, 9)], "vision": [(1, 4)]}
    means = {"lm": torch.arange(2 * 64, dtype=torch.float64).reshape(2, 64) / 7, "vision": torch.full((3, 64), -0.5)}
    mean = Deactivation(sites, neurons, Intervention(mode="mean"), means)
    raw, seen = _raw_and_seen(model, sites, mean, lambda: model(**inputs))
    for site, pairs in neurons.items():
        for layer, neuron in pairs:
            expected = means[site][layer, neuron].float()
            assert torch.all(seen[site, layer][0][..., neuron] == expected)
            rest = [n for n in range(64) if n != neuron]
            assert torch.equal(seen[site, layer][0][..., rest], raw[site, layer][0][..., rest])
    scale = Deactivation(sites, neurons, Intervention(mode="scale", factor=3.0))
    raw, seen = _raw_and_seen(model, sites, scale, lambda: model(**inputs))
    for site, pairs in neurons.items():
        for layer, neuron in pairs:
            torch.testing.assert_close(seen[site, layer][0][..., neuron], 3.0 * raw[site, layer][0][..., neuron])
            assert raw[site, layer][0][..., neuron].abs().sum() > 0
    with pytest.raises(DeactivationError, match="site 'lm': mean activations of 2 layers x 64 neurons.*got none"):
        Deactivation(sites, neurons, Intervention(mode="mean"), {"vision": means["vision"]})
    with pytest.raises(DeactivationError, match="got shape \\(2, 63\\)"):
        Deactivation(sites, neurons, Intervention(mode="mean"), {**means, "lm": torch.zeros(2, 63)})


@pytest.mark.parametrize("positions", ["image", "text"])
def test_image_or_text_positions_only(llava_next, positions):
    model, _, sites, inputs = llava_next
    neurons = {"lm": [(0, 5), (1, 2)], "vision": [(0, 7)], "projector": [(0, 1)]}
    deactivation = Deactivation(sites, neurons, Intervention(positions=positions))
    # the vision tower and the projector see image positions only: text-only leaves them alone
    assert deactivation.count == (4 if positions == "image" else 2)
    deactivation.set_positions(_scopes(model, inputs))
    raw, seen = _raw_and_seen(model, sites, deactivation, lambda: model(**inputs))
    where = _scopes(model, inputs)[positions]
    assert where.any() and (~where).any()
    for layer, neuron in neurons["lm"]:
        out, own = seen["lm", layer][0][..., neuron], raw["lm", layer][0][..., neuron]
        assert torch.all(out[where] == 0)
        assert torch.equal(out[~where], own[~where]) and own[~where].abs().sum() > 0
    for site in ("vision", "projector"):
        ((layer, neuron),) = neurons[site]
        out = seen[site, layer][0][..., neuron]
        assert torch.all(out == 0) if positions == "image" else torch.equal(out, raw[site, layer][0][..., neuron])


def test_prefill_only_in_generation_and_in_a_teacher_forced_answer(llava_next):
    model, _, sites, inputs = llava_next
    neurons = {"lm": [(1, 11)], "vision": [(1, 0)]}
    deactivation = Deactivation(sites, neurons, Intervention(mode="scale", factor=-1.0, prefill_only=True))
    deactivation.set_positions(_scopes(model, inputs))

    def generate():
        model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)

    raw, seen = _raw_and_seen(model, sites, deactivation, generate)
    calls = list(zip(raw["lm", 1], seen["lm", 1]))
    assert len(calls) == 3  # the prefill and two decoding steps
    torch.testing.assert_close(calls[0][1][..., 11], -calls[0][0][..., 11])
    assert all(torch.equal(after, before) for before, after in calls[1:])
    torch.testing.assert_close(seen["vision", 1][0][..., 0], -raw["vision", 1][0][..., 0])

    # one forward over prompt and answer: the answer's positions are decoding steps, left alone
    answer = torch.zeros_like(inputs["attention_mask"], dtype=torch.bool)
    answer[:, -2:] = True
    deactivation.set_positions(_scopes(model, inputs), answer)
    raw, seen = _raw_and_seen(model, sites, deactivation, lambda: model(**inputs))
    out, own = seen["lm", 1][0][..., 11], raw["lm", 1][0][..., 11]
    assert torch.equal(out[answer], own[answer])
    torch.testing.assert_close(out[~answer], -own[~answer])


def test_text_positions_at_every_decoding_step_and_a_missing_set_positions(llava_next):
    model, _, sites, inputs = llava_next
    deactivation = Deactivation(sites, {"lm": [(0, 6)]}, Intervention(positions="text"))
    with torch.no_grad(), pytest.raises(DeactivationError, match="needs the positions of each input"), deactivation:
        model(**inputs)
    deactivation.set_positions(_scopes(model, inputs))

    def generate():
        model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)

    raw, seen = _raw_and_seen(model, sites, deactivation, generate)
    prefill, *steps = seen["lm", 0]
    text = _scopes(model, inputs)["text"]
    assert torch.all(prefill[..., 6][text] == 0)
    assert torch.equal(prefill[..., 6][~text], raw["lm", 0][0][..., 6][~text])
    assert len(steps) == 2 and all(torch.all(step[..., 6] == 0) for step in steps)
    image_only = Deactivation(sites, {"lm": [(0, 6)]}, Intervention(positions="image"))
    image_only.set_positions(_scopes(model, inputs))
    raw, seen = _raw_and_seen(model, sites, image_only, generate)
    assert all(torch.equal(after, before) for before, after in list(zip(raw["lm", 0], seen["lm", 0]))[1:])
