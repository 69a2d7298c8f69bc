"""Hidden-state perturbation: exact baselines, a direct computation, causality, padding, the CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import DecoderCapture, assert_batch_invariant, noise_image, selection_for

from mmneuron.cli import main
from mmneuron.conditions import Condition
from mmneuron.data.samples import Sample, encode_png, write_samples
from mmneuron.hooks.deactivate import Deactivation
from mmneuron.models.decoder import final_norm_and_unembed
from mmneuron.models.inputs import RIGHT, encode, scope_masks
from mmneuron.models.sites import image_prompt, resolve_sites
from mmneuron.models.tiny import TINY_ARCHITECTURES, build_tiny, save_tiny
from mmneuron.perturbation import perturbation, run_perturbation

QUESTIONS = ["what colour is the car?", "is there a river?", "how many people are in the picture on the left?"]
NUMERIC = ["cosine_mean", "cosine_std", "rel_l2_mean", "rel_l2_std"]


def _samples(domain: str, count: int) -> list[Sample]:
    return [
        Sample(f"{domain}-{i}", domain, QUESTIONS[i % 3], ["red"], encode_png(noise_image(i, (40 + 16 * i, 30))))
        for i in range(count)
    ]


# Strong enough to move the tiny models' hidden states well above float noise.
NEURONS = {
    "rs": {
        "lm": [(0, n) for n in range(0, 64, 2)] + [(1, 5)],
        "vision": [(0, n) for n in range(0, 64, 3)],
        "projector": [(0, 4), (0, 7)],
    },
    "med": {"lm": [(1, n) for n in range(20)], "vision": [(1, 5)], "projector": []},
}


@pytest.fixture(scope="module")
def llava_next():
    model, processor = build_tiny("llava_next")
    return model, processor, selection_for(model, NEURONS, samples=3)


def _batch(model, processor, count: int = 3):
    prompts = [image_prompt(model.config.model_type, f"<image>\n{q}") for q in QUESTIONS[:count]]
    inputs = encode(model, processor, [noise_image(i, (40 + 16 * i, 30)) for i in range(count)], prompts, RIGHT).inputs
    assert not inputs["attention_mask"].bool().all(), "the batch should be padded"
    return inputs


def _reference_states(model, inputs) -> list[torch.Tensor]:
    """Each LLM layer's output from output_hidden_states; the last one (already normed there) is the
    final norm's input."""
    norm, _ = final_norm_and_unembed(model)
    last = []
    handle = norm.register_forward_hook(lambda module, args, output: last.append(args[0]))
    try:
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True).hidden_states
    finally:
        handle.remove()
    return [*hidden[1:-1], last[0]]


def test_none_is_exactly_unchanged(llava_next):
    model, processor, selection = llava_next
    run = run_perturbation(
        model, processor, _samples("rs", 3), selection, [Condition("none")], batch_size=3, chat=False, progress=False
    )
    table = run.table()
    assert len(table) == 3 * 2  # scopes x layers
    assert (table["cosine_mean"] == 1.0).all() and (table["cosine_std"] == 0.0).all()
    assert (table["rel_l2_mean"] == 0.0).all() and (table["rel_l2_std"] == 0.0).all()
    assert (table["deactivated"] == 0).all() and (table["samples"] == 3).all()


def test_values_equal_a_direct_computation(llava_next):
    model, processor, selection = llava_next
    inputs = _batch(model, processor)
    neurons = Condition("all").neurons(selection, "rs")
    deactivation = Deactivation(resolve_sites(model), neurons)
    masks = scope_masks(model, inputs)
    hooks = [len(layer._forward_hooks) for layer in model.get_decoder().layers]
    stats = perturbation(model, inputs, masks, {"all": deactivation})["all"]
    assert [len(layer._forward_hooks) for layer in model.get_decoder().layers] == hooks

    clean = _reference_states(model, inputs)
    with deactivation:
        ablated = _reference_states(model, inputs)
    real = inputs["attention_mask"].bool()
    image = (inputs["input_ids"] == model.config.image_token_id) & real
    for scope, mask in (("image", image), ("text", real & ~image)):
        s = stats[scope]
        assert s.n == mask.sum()
        cos_mean, cos_std = s.cosine()
        rel_mean, rel_std = s.rel_l2()
        for layer, (c, a) in enumerate(zip(clean, ablated)):
            c, a = c[mask].double(), a[mask].double()
            cosine = torch.nn.functional.cosine_similarity(a, c, dim=-1)
            rel = (a - c).norm(dim=-1) / c.norm(dim=-1)
            assert rel.mean() > 1e-3, "the deactivation should move every layer"
            assert 1 - cos_mean[layer] == pytest.approx((1 - cosine).mean().item(), rel=1e-4, abs=1e-7)
            assert cos_std[layer] == pytest.approx(cosine.std(unbiased=False).item(), rel=1e-3, abs=1e-7)
            assert rel_mean[layer] == pytest.approx(rel.mean().item(), rel=1e-5)
            assert rel_std[layer] == pytest.approx(rel.std(unbiased=False).item(), rel=1e-4, abs=1e-7)
    assert all(len(m._forward_hooks) == 0 for site in resolve_sites(model) for m in site.modules)


def test_layers_before_the_first_deactivated_lm_layer_are_unchanged(llava_next):
    base, processor, _ = llava_next
    config = copy.deepcopy(base.config)
    config.text_config.num_hidden_layers = 4
    torch.manual_seed(0)
    model = type(base)(config).eval()
    selection = selection_for(model, {"rs": {"lm": [(2, n) for n in range(0, 64, 4)] + [(3, 1)]}})
    run = run_perturbation(
        model, processor, _samples("rs", 3), selection, [Condition("lm")], batch_size=3, chat=False, progress=False
    )
    table = run.table().set_index(["scope", "layer"])
    for scope in ("image", "text", "all"):
        before = table.loc[scope].loc[[0, 1]]
        assert (before["cosine_mean"] == 1.0).all() and (before["rel_l2_mean"] == 0.0).all()
        assert (before["cosine_std"] == 0.0).all() and (before["rel_l2_std"] == 0.0).all()
        after = table.loc[scope].loc[[2, 3]]
        assert (after["cosine_mean"] < 1.0).all() and (after["rel_l2_mean"] > 0.0).all()


@pytest.mark.parametrize("arch", ["llava_next", "instructblip"])
def test_padding_is_excluded(arch):
    """A padded batch gives the aggregates of the samples run one at a time (no padding)."""
    model, processor = build_tiny(arch)
    neurons = {"rs": {"lm": [(0, n) for n in range(0, 64, 2)], "vision": [(0, n) for n in range(0, 64, 3)]}}
    selection = selection_for(model, neurons, samples=3)
    samples = _samples("rs", 3)
    conditions = [Condition("lm"), Condition("lm+vision", seed=1)]
    tables = [
        run_perturbation(
            model, processor, samples, selection, conditions, batch_size=bs, chat=False, progress=False
        ).table()
        for bs in (1, 3)
    ]
    pd.testing.assert_frame_equal(tables[0].drop(columns=NUMERIC), tables[1].drop(columns=NUMERIC))
    for column in NUMERIC:
        np.testing.assert_allclose(tables[0][column], tables[1][column], rtol=1e-4, atol=1e-6, err_msg=column)
    assert (tables[1]["rel_l2_mean"] > 1e-3).all()
    # padding would add positions: n is the real positions only
    expected = sum(
        int(
            encode(
                model,
                processor,
                [noise_image(i, (40 + 16 * i, 30))],
                [image_prompt(arch, f"<image>\n{s.question}")],
                RIGHT,
            )
            .inputs["attention_mask"]
            .sum()
        )
        for i, s in enumerate(samples)
    )
    assert set(tables[1].loc[tables[1]["scope"] == "all", "n"]) == {expected}


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_hidden_states_do_not_depend_on_the_batch(arch):
    """The clean and the ablated residual streams of each sample are the same alone and in a padded
    batch of three prompts of different lengths, layer by layer."""
    model, processor = build_tiny(arch)
    selection = selection_for(model, {"rs": {"lm": [(0, n) for n in range(0, 64, 2)]}}, samples=3)
    samples = [
        Sample(f"rs-{i}", "rs", q, ["red"], encode_png(noise_image(i, (32 + 24 * i, 30 + 6 * i))))
        for i, q in enumerate([QUESTIONS[1], QUESTIONS[2], QUESTIONS[0]])
    ]
    captures = {}
    for batch_size in (1, 3):
        with DecoderCapture(model) as capture:
            run_perturbation(
                model,
                processor,
                samples,
                selection,
                [Condition("lm")],
                batch_size=batch_size,
                chat=False,
                progress=False,
            )
        captures[batch_size] = capture
    assert not captures[3].forwards[0][0].all(), "the batch must be padded"
    # one sample at a time: clean, ablated per sample; batched: clean rows 0-2, then ablated rows 0-2
    assert_batch_invariant(captures[1], captures[3], order=[0, 2, 4, 1, 3, 5])


def test_cli_end_to_end(tmp_path, capsys):
    model_dir = save_tiny("llava_next", tmp_path / "model")
    model, _ = build_tiny("llava_next")
    neurons = selection_for(model, NEURONS, samples=3).save(tmp_path / "neurons.json")
    files = []
    for domain in ("rs", "med"):
        samples = _samples(domain, 3)
        if domain == "med":
            samples.insert(1, Sample("med-broken", "med", "is there a river?", ["no"], b"not an image"))
        files.append(tmp_path / "data" / domain / "eval.parquet")
        write_samples(samples, files[-1])
    out = tmp_path / "perturbation" / "perturbation.csv"
    common = [
        "perturb",
        "--model",
        str(model_dir),
        "--neurons",
        str(neurons),
        "--data",
        *map(str, files),
        "--device",
        "cpu",
        "--name",
        "tiny",
        "--batch-size",
        "2",
        "--no-chat",
    ]
    assert (
        main(
            [
                *common,
                "--conditions",
                "none",
                "lm",
                "all",
                "--random-seeds",
                "1",
                "2",
                "--prompts",
                "med=Question: {question}",
                "--out",
                str(out),
                "--figures",
                str(tmp_path / "fig"),
            ]
        )
        == 0
    )
    table = pd.read_csv(out)
    assert list(table.columns) == [
        "model",
        "condition",
        "control",
        "seed",
        "domain",
        "scope",
        "layer",
        "cosine_mean",
        "cosine_std",
        "rel_l2_mean",
        "rel_l2_std",
        "n",
        "samples",
        "deactivated",
    ]
    assert len(table) == 7 * 2 * 3 * 2  # (none, 3 x lm, 3 x all) x domains x scopes x layers
    assert list(dict.fromkeys(zip(table["condition"], table["seed"].fillna(-1)))) == [
        ("none", -1),
        ("lm", -1),
        ("all", -1),
        ("lm", 1),
        ("lm", 2),
        ("all", 1),
        ("all", 2),
    ]
    none = table[table["condition"] == "none"]
    assert (none["cosine_mean"] == 1.0).all() and (none["rel_l2_mean"] == 0.0).all()
    assert set(table["model"]) == {"tiny"} and table.groupby("domain")["samples"].first().to_dict() == {
        "med": 3,
        "rs": 3,
    }
    by = table.set_index(["condition", "control", "domain", "scope", "layer"])
    assert by.loc[("lm", "domain", "rs", "image", 0), "deactivated"] == 33
    assert by.loc[("lm", "domain", "med", "text", 0), "cosine_mean"] == 1.0  # med's lm neurons sit in layer 1
    assert by.loc[("all", "random", "rs", "image", 1), "deactivated"].tolist() == [33 + 22 + 2] * 2

    summary = json.loads(out.with_name("perturbation_summary.json").read_text())
    assert [s["sample_id"] for s in summary["skipped"]] == ["med-broken"]
    assert "corrupt image" in summary["skipped"][0]["reason"]
    assert summary["samples"] == {"med": 3, "rs": 3}
    assert summary["settings"]["prompts"] == {"med": "Question: {question}"}
    assert summary["conditions"][1] == {
        "condition": "lm",
        "control": "domain",
        "seed": None,
        "intervention": {"mode": "fixed", "value": 0.0, "positions": "all", "prefill_only": False},
        "deactivated": {"med": 20, "rs": 33},
    }
    for stem in ("perturbation_layers", "perturbation_cosine_by_domain", "perturbation_rel_l2_by_domain"):
        for ext in ("png", "pdf"):
            assert (tmp_path / "fig" / f"{stem}.{ext}").stat().st_size > 1000

    assert main([*common, "--conditions", "qformer", "--out", str(tmp_path / "x.csv")]) == 1
    assert "condition 'qformer'" in capsys.readouterr().err
    assert main([*common, "--conditions", "lm", "--prompts", "oops", "--out", str(tmp_path / "x.csv")]) == 1
    assert "DOMAIN=TEMPLATE" in capsys.readouterr().err
