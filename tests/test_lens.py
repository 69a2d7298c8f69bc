"""Logit lens: a naive reference, the final-norm handling, bounded memory, batching, the CLI."""

from __future__ import annotations

import copy
import json
import math
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import DecoderCapture, assert_batch_invariant
from PIL import Image

from mmneuron.cli import main
from mmneuron.data.samples import Sample, encode_png, write_samples
from mmneuron.lens import LensAccumulator, LensHead, ScopeStats, logit_lens, run_lens
from mmneuron.models.decoder import DecoderError, each_layer_output, final_norm_and_unembed
from mmneuron.models.inputs import scope_masks
from mmneuron.models.sites import image_prompt
from mmneuron.models.tiny import TINY_ARCHITECTURES, build_tiny, save_tiny

QUESTIONS = ["What colour is the car?", "How many people are in the picture on the left?", "Is this a road?"]


def _image(i: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _samples(domain: str, count: int, start: int = 0) -> list[Sample]:
    return [
        Sample(f"{domain}-{i}", domain, QUESTIONS[i % 3], ["red"], encode_png(_image(i, (40 + 8 * i, 30))))
        for i in range(start, start + count)
    ]


def _inputs(arch: str, processor, count: int = 2):
    prompts = [image_prompt(arch, f"<image>\n{q}") for q in QUESTIONS[:count]]
    inputs = processor(images=[_image(i) for i in range(count)], text=prompts, padding=True, return_tensors="pt")
    inputs.pop("labels", None)
    return inputs


@pytest.fixture(scope="module")
def llava_next():
    return build_tiny("llava_next")


def _naive_entropies(model, inputs, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All positions of one (not the last) layer at once: entropy and top probability, batch x seq."""
    norm, head = final_norm_and_unembed(model)
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states[layer + 1]
        probs = torch.softmax(head(norm(hidden)).float(), dim=-1)
    entropy = -(probs * probs.log()).sum(-1)
    return entropy, probs.max(-1).values


def test_aggregates_match_a_naive_computation(llava_next):
    model, processor = llava_next
    inputs = _inputs("llava_next", processor, 3)
    entropy, top_prob = _naive_entropies(model, inputs, layer=0)
    real = inputs["attention_mask"].bool()
    assert not real.all(), "the prompts should need padding"
    image = (inputs["input_ids"] == model.config.image_token_id) & real
    stats, _ = logit_lens(model, inputs, scope_masks(model, inputs), chunk_size=5)
    for scope, mask in (("image", image), ("text", real & ~image)):
        s = stats[scope]
        assert s.n[0] == mask.sum()
        assert s.entropy_mean()[0] == pytest.approx(entropy[mask].mean().item(), rel=1e-5)
        assert s.entropy_std()[0] == pytest.approx(entropy[mask].std(unbiased=False).item(), rel=1e-3, abs=1e-6)
        assert s.top_prob_mean()[0] == pytest.approx(top_prob[mask].mean().item(), rel=1e-5)
        assert sum(s.top_ids[0].values()) == mask.sum()


def test_hidden_states_last_is_already_normed_in_transformers_5(llava_next):
    """What the lens works around: hidden_states[-1] is the normed last_hidden_state."""
    model, processor = llava_next
    inputs = _inputs("llava_next", processor)
    norm, head = final_norm_and_unembed(model)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    torch.testing.assert_close(head(out.hidden_states[-1]), out.logits)
    assert not torch.allclose(head(norm(out.hidden_states[-1])), out.logits, atol=1e-3)


@pytest.mark.parametrize("arch", ["llava_next", "paligemma", "qwen2_vl", "instructblip"])
def test_last_layer_lens_equals_the_models_logits(arch):
    model, processor = build_tiny(arch)
    if arch == "paligemma":  # Gemma 2-style final softcapping: the lens must apply it as the model does
        model.config.text_config.final_logit_softcapping = 0.5
    inputs = _inputs(arch, processor)
    with torch.no_grad():
        logits = model(**inputs).logits
    lens = LensHead(model)
    outputs = {}
    each_layer_output(model, inputs, outputs.__setitem__)
    last = outputs[len(outputs) - 1]
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(lens(last)[real], logits.float()[real], rtol=1e-5, atol=1e-5)
    if arch == "paligemma":
        assert lens.softcap == 0.5
        assert not torch.allclose(lens.head(lens.norm(last))[real], logits[real], atol=1e-3)


def _with_layers(model, layers: int):
    config = copy.deepcopy(model.config)
    config.text_config.num_hidden_layers = layers
    torch.manual_seed(0)
    return type(model)(config).eval()


@pytest.mark.parametrize("layers", [2, 6])
def test_logits_never_exceed_one_chunk(llava_next, layers):
    """Materialising several layers or all positions at once would call lm_head on a larger tensor."""
    base, processor = llava_next
    model = _with_layers(base, layers)
    inputs = _inputs("llava_next", processor, 3)
    positions = int(inputs["attention_mask"].sum())
    shapes = []
    _, head = final_norm_and_unembed(model)
    handle = head.register_forward_hook(lambda m, args, out: shapes.append(out.shape))
    try:
        logit_lens(model, inputs, scope_masks(model, inputs), chunk_size=4)
    finally:
        handle.remove()
    vocab = model.config.text_config.vocab_size
    lens_calls = [s for s in shapes if len(s) == 2]
    assert max(math.prod(s) for s in shapes) == 4 * vocab
    assert len(lens_calls) == layers * math.ceil(positions / 4)
    assert [s for s in shapes if len(s) != 2] == [torch.Size([3, 1, vocab])]  # the model's own (logits_to_keep=1)


def test_each_layer_is_decoded_before_the_next_runs(llava_next):
    """What keeps the lens' peak memory flat in depth: no layer's hidden states wait for the others."""
    base, processor = llava_next
    model = _with_layers(base, 4)
    inputs = _inputs("llava_next", processor, 2)
    events = []
    _, head = final_norm_and_unembed(model)
    hooks = [head.register_forward_hook(lambda m, args, out: events.append("lens") if out.dim() == 2 else None)]
    for index, layer in enumerate(model.get_decoder().layers):
        hooks.append(layer.register_forward_hook(lambda m, args, out, index=index: events.append(index)))
    try:
        logit_lens(model, inputs, scope_masks(model, inputs), chunk_size=1 << 20)
    finally:
        for hook in hooks:
            hook.remove()
    assert events == [0, "lens", 1, "lens", 2, "lens", 3, "lens"]


def test_unknown_model_is_refused():
    with pytest.raises(DecoderError, match="Linear"):
        final_norm_and_unembed(torch.nn.Linear(2, 2))


def test_batching_and_padding_do_not_change_the_table(llava_next):
    model, processor = llava_next
    samples = _samples("ad", 3) + _samples("med", 2, start=3)
    one = run_lens(model, processor, samples, batch_size=1, progress=False).accumulator.table(processor.tokenizer)
    three = run_lens(model, processor, samples, batch_size=3, chunk_size=7, progress=False)
    table = three.accumulator.table(processor.tokenizer)
    # Padding changes float32 summation order, so entropies move by ~1e-6; their spread is only
    # ~1e-3 for this untrained model, hence an absolute tolerance as well as the relative one.
    pd.testing.assert_frame_equal(
        one.drop(columns="top_tokens"), table.drop(columns="top_tokens"), rtol=1e-4, atol=1e-5
    )
    assert len(table) == 2 * 3 * 2  # domains x scopes x layers
    by = table.set_index(["domain", "scope", "layer"])
    assert by.loc[("ad", "all", 0), "n"] == by.loc[("ad", "image", 0), "n"] + by.loc[("ad", "text", 0), "n"]
    assert by.loc[("ad", "image", 0), "samples"] == 3
    assert re.fullmatch(r"(\S+ \d\.\d\d)(; \S+ \d\.\d\d)*", by.loc[("med", "image", 1), "top_tokens"])


def _different_lengths(domain: str = "ad") -> list[Sample]:
    """Three samples whose prompts differ in length and whose images differ in size."""
    questions = [QUESTIONS[2], QUESTIONS[1], QUESTIONS[0]]
    return [
        Sample(f"{domain}-{i}", domain, q, ["red"], encode_png(_image(i, (32 + 24 * i, 30 + 6 * i))))
        for i, q in enumerate(questions)
    ]


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_lens_hidden_states_do_not_depend_on_the_batch(arch):
    """Each sample's residual stream, layer by layer, is the same alone and in a padded batch of
    three prompts of different lengths (InstructBLIP pads between its query tokens and the text)."""
    model, processor = build_tiny(arch)
    samples = _different_lengths()
    captures = {}
    for batch_size in (1, 3):
        with DecoderCapture(model) as capture:
            run_lens(model, processor, samples, batch_size=batch_size, examples_per_domain=0, progress=False)
        captures[batch_size] = capture
    assert len(captures[1].forwards) == 3 and len(captures[3].forwards) == 1
    assert not captures[3].forwards[0][0].all(), "the batch must be padded"
    assert_batch_invariant(captures[1], captures[3], order=[0, 1, 2])


def test_instructblip_table_does_not_depend_on_the_batch_size():
    """The Q-Former's instruction tokens must not shift with the batch's longest question (BERT's
    absolute positions): a padded batch gives the table of one-sample batches."""
    model, processor = build_tiny("instructblip")
    samples = _samples("ad", 3)
    assert len({len(processor.qformer_tokenizer(s.question)["input_ids"]) for s in samples}) > 1
    tables = [
        run_lens(model, processor, samples, batch_size=bs, progress=False).accumulator.table(processor.tokenizer)
        for bs in (1, 3)
    ]
    pd.testing.assert_frame_equal(
        tables[0].drop(columns="top_tokens"), tables[1].drop(columns="top_tokens"), rtol=1e-6, atol=1e-6
    )


def test_corrupt_images_are_reported_and_counted(llava_next):
    model, processor = llava_next
    bad = Sample("ad-broken", "ad", "What?", [], b"not an image")
    run = run_lens(model, processor, [*_samples("ad", 2), bad], batch_size=4, examples_per_domain=1, progress=False)
    assert [s["sample_id"] for s in run.skipped] == ["ad-broken"]
    assert "corrupt image" in run.skipped[0]["reason"]
    assert run.accumulator.samples["ad"] == 2
    (example,) = run.examples
    assert len(example["top_tokens"]) == 2 and len(example["top_tokens"][0]) == len(example["positions"])
    assert {p["scope"] for p in example["positions"]} == {"image", "text"}
    assert all(0 < p <= 1 for layer in example["top_probs"] for p in layer)


def _uniform_stats(n: int) -> dict[str, ScopeStats]:
    """n positions per scope, one layer, every position with entropy 1 and top token 7 at p = 0.5."""
    one = ScopeStats(np.array([n]), np.array([1.0 * n]), np.array([1.0 * n]), np.array([0.5 * n]), [Counter({7: n})])
    return {"image": one, "text": one}


def test_accumulator_merges_additively():
    acc = LensAccumulator("m")
    acc.add("d", _uniform_stats(2), samples=1)
    acc.add("d", _uniform_stats(3), samples=2)
    stats = acc.scope_stats("d")
    assert stats["image"].n.tolist() == [5] and stats["all"].n.tolist() == [10] and acc.samples["d"] == 3
    assert stats["all"].entropy_std().tolist() == [0.0] and stats["all"].top_ids[0] == Counter({7: 10})


def test_cli_end_to_end(tmp_path):
    model_dir = save_tiny("llava_next", tmp_path / "model")
    files = []
    for domain in ("ad", "med"):
        samples = _samples(domain, 3)
        if domain == "med":
            samples.append(Sample("med-broken", "med", "What?", [], b"\x89PNG broken"))
        files.append(tmp_path / "data" / domain / "stats.parquet")
        write_samples(samples, files[-1])
    out = tmp_path / "lens" / "table.csv"
    assert (
        main(
            [
                "lens",
                "--model",
                str(model_dir),
                "--data",
                *map(str, files),
                "--out",
                str(out),
                "--limit",
                "4",
                "--batch-size",
                "2",
                "--device",
                "cpu",
                "--figures",
                str(tmp_path / "fig"),
            ]
        )
        == 0
    )
    table = pd.read_csv(out)
    assert list(table.columns) == [
        "model",
        "domain",
        "scope",
        "layer",
        "n",
        "samples",
        "entropy_mean",
        "entropy_std",
        "top_prob_mean",
        "top_tokens",
    ]
    assert len(table) == 12 and set(table["model"]) == {"model"}
    assert table.groupby("domain")["samples"].first().to_dict() == {"ad": 3, "med": 3}
    stages = pd.read_csv(out.with_name("table_stages.csv"))
    assert list(stages["domain"]) == ["ad", "med"] and "start_fraction" in stages
    examples = json.loads(out.with_name("table_examples.json").read_text())
    assert [s["sample_id"] for s in examples["skipped"]] == ["med-broken"]
    assert examples["settings"]["prompt"] == "<image>\n{question}" and len(examples["examples"]) == 4
    for stem in ("lens_entropy", "lens_examples"):
        for ext in ("png", "pdf"):
            assert (tmp_path / "fig" / f"{stem}.{ext}").stat().st_size > 1000
