"""Extraction: counts equal a brute-force count on all six tiny architectures, for every site and
scope; they do not depend on batch size, sharding or padding; bad images; the CLI end to end."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from expected_sites import EXPECTED_SITES, module_names
from helpers import packed_indices
from PIL import Image
from transformers import LlamaConfig

from mmneuron import cli
from mmneuron.commands import shard_spec
from mmneuron.counts import Counts, merge
from mmneuron.data.samples import Sample, encode_png, read_samples, shard, write_samples
from mmneuron.extract import ExtractionError, extract_counts
from mmneuron.models.inputs import InputError
from mmneuron.models.loading import ModelLoadError, load_model
from mmneuron.models.tiny import TINY_ARCHITECTURES, build_tiny, save_tiny

QUESTIONS = [
    "What colour is the car?",
    "How many dogs are there in this picture on the left?",
    "Is it red?",
    "What is the title of this document page?",
    "Which kind of building is on the right of the road and what colour is its roof?",
]
SIZES = [(64, 64), (20, 64), (64, 40), (32, 32), (48, 64)]


def _image(height: int, width: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode_png(Image.fromarray(pixels))


def _samples(questions=QUESTIONS, sizes=SIZES, prefix="s") -> list[Sample]:
    return [
        Sample(f"{prefix}{i}", "rs", question, ["yes"], _image(*size, seed=i))
        for i, (question, size) in enumerate(zip(questions, sizes))
    ]


class BruteForce:
    """Captures each forward's inputs and the activation outputs, found by the hand-written names."""

    def __init__(self, model, arch):
        self.arch, self.forwards, self.config, self._survivors = arch, [], model.config, {}
        modules = dict(model.named_modules())
        self.handles = [model.register_forward_pre_hook(self._inputs, with_kwargs=True)]
        for site in EXPECTED_SITES[arch]:
            for layer, name in enumerate(module_names(arch, site)):
                self.handles.append(modules[name].register_forward_hook(self._output(site, layer)))

    def _inputs(self, module, args, kwargs):
        keep = ("input_ids", "attention_mask", "qformer_attention_mask", "image_sizes")
        self.forwards.append(({key: kwargs[key].clone() for key in keep if key in kwargs}, {}))

    def _output(self, site, layer):
        def hook(module, args, output):
            self.forwards[-1][1].setdefault(site, {})[layer] = output.detach().clone()

        return hook

    def _kept(self, positions: str, inputs: dict, index: int) -> bool:
        """Whether a vision-tower or projector position reaches the language model, by the model's
        own unpadding (CLS tokens of the vision tower count)."""
        if self.arch != "llava_next" or positions not in ("vision", "features"):
            return True
        key = id(inputs)
        if key not in self._survivors:
            self._survivors[key] = set(packed_indices(self.config, inputs["image_sizes"])[0])
        vision = self.config.vision_config
        per_tile = (vision.image_size // vision.patch_size) ** 2
        if positions == "vision":
            tile, position = divmod(index, per_tile + 1)
            return position == 0 or tile * per_tile + position - 1 in self._survivors[key]
        return index in self._survivors[key]

    def remove(self):
        for handle in self.handles:
            handle.remove()

    def counts(self, image_token: int) -> tuple[dict, dict]:
        """Per (site, scope): positions > 0 per layer and neuron, and positions counted, by loops."""
        active, tokens = {}, {}

        def add(site, scope, layer, vector):
            _, layers, width, _, _ = EXPECTED_SITES[self.arch][site]
            counts = active.setdefault((site, scope), torch.zeros(layers, width, dtype=torch.int64))
            counts[layer] += (vector > 0).long()
            tokens.setdefault((site, scope), torch.zeros(layers, dtype=torch.int64))[layer] += 1

        for inputs, outputs in self.forwards:
            for site, by_layer in outputs.items():
                positions = EXPECTED_SITES[self.arch][site][4]
                for layer, output in by_layer.items():
                    if positions == "language":
                        for b, t in np.ndindex(*inputs["input_ids"].shape):
                            if inputs["attention_mask"][b, t]:
                                scope = "image" if inputs["input_ids"][b, t] == image_token else "text"
                                add(site, "all", layer, output[b, t])
                                add(site, scope, layer, output[b, t])
                    elif positions == "instruction":
                        for b, t in np.ndindex(*inputs["qformer_attention_mask"].shape):
                            if inputs["qformer_attention_mask"][b, t]:
                                add(site, "all", layer, output[b, t])
                                add(site, "text", layer, output[b, t])
                    else:  # every vision-tower, projector and query position, but LLaVA-NeXT's tile padding
                        vectors = output.reshape(-1, output.shape[-1])
                        for index, vector in enumerate(vectors):
                            if self._kept(positions, inputs, index):
                                add(site, "all", layer, vector)
                                add(site, "image", layer, vector)
        return active, tokens


def assert_same_counts(a: Counts, b: Counts) -> None:
    assert a.keys == b.keys and a.sites == b.sites and a.samples == b.samples
    for key in a.keys:
        assert torch.equal(a.active[key], b.active[key]), key
        assert torch.equal(a.tokens[key], b.tokens[key]), key


@pytest.fixture(scope="module", params=TINY_ARCHITECTURES)
def counted(request):
    """A tiny model, and its counts over the samples in batches of 3, checked by brute force."""
    arch = request.param
    model, processor = build_tiny(arch)
    brute = BruteForce(model, arch)
    try:
        counts = extract_counts(model, processor, _samples(), batch_size=3, progress=False)
    finally:
        brute.remove()
    return arch, model, processor, counts, brute


def test_counts_equal_brute_force_for_every_site_and_scope(counted):
    arch, model, _, counts, brute = counted
    assert len(brute.forwards) == 2
    padded = [inputs for inputs, _ in brute.forwards if (inputs["attention_mask"] == 0).any()]
    assert padded, "the prompts must need padding for this test to mean anything"
    if arch == "instructblip":
        assert any((inputs["qformer_attention_mask"] == 0).any() for inputs, _ in brute.forwards)

    active, tokens = brute.counts(model.config.image_token_id)
    expected_keys = set()
    for site, (_, _, _, _, positions) in EXPECTED_SITES[arch].items():
        parts = {"language": ("image", "text"), "instruction": ("text",)}.get(positions, ("image",))
        expected_keys |= {(site, scope) for scope in ("all", *parts)}
    assert set(counts.keys) == set(active) == expected_keys
    for key in counts.keys:
        assert torch.equal(counts.active[key], active[key]), key
        assert torch.equal(counts.tokens[key], tokens[key]), key
        assert (counts.tokens[key] > 0).all(), key
    assert counts.samples == len(QUESTIONS) and counts.domain == "rs" and counts.skipped == []
    assert {name: info.to_dict() for name, info in counts.sites.items()} == {
        site: {"layers": layers, "width": width, "inert_layers": list(inert)}
        for site, (_, layers, width, inert, _) in EXPECTED_SITES[arch].items()
    }
    assert counts.settings["prompt"] == "<image>\n{question}" and counts.settings["batch_size"] == 3


def test_llava_next_tile_padding_is_counted_only_when_asked():
    """``anyres_padding="count"`` (the authors' behaviour) counts every vision-tower and projector
    position; the default counts only those the model's unpadding passes on (brute force above)."""
    arch = "llava_next"
    model, processor = build_tiny(arch)
    skipped_padding = extract_counts(model, processor, _samples(), batch_size=3, progress=False)
    brute = BruteForce(model, arch)
    brute._kept = lambda positions, inputs, index: True  # every position, as the authors counted
    try:
        every = extract_counts(model, processor, _samples(), batch_size=3, anyres_padding="count", progress=False)
    finally:
        brute.remove()
    active, tokens = brute.counts(model.config.image_token_id)
    for key in every.keys:
        assert torch.equal(every.active[key], active[key]) and torch.equal(every.tokens[key], tokens[key]), key
    for site in ("vision", "projector"):  # the non-square samples' grid tiles hold padding
        assert (skipped_padding.tokens[site, "all"] < every.tokens[site, "all"]).all(), site
    assert torch.equal(skipped_padding.active["lm", "all"], every.active["lm", "all"])
    assert (skipped_padding.settings["anyres_padding"], every.settings["anyres_padding"]) == ("skip", "count")


def test_batch_size_does_not_change_counts(counted):
    _, model, processor, counts, _ = counted
    for batch_size in (1, 5):
        assert_same_counts(extract_counts(model, processor, _samples(), batch_size=batch_size, progress=False), counts)


def test_shards_merge_to_the_whole(counted):
    _, model, processor, counts, _ = counted
    parts = [extract_counts(model, processor, shard(_samples(), i, 3), batch_size=2, progress=False) for i in (1, 2, 3)]
    assert [part.samples for part in parts] == [1, 2, 2]
    assert_same_counts(merge(parts), counts)


def test_padding_is_not_counted(counted):
    _, model, processor, _, _ = counted
    short = _samples(["Is it red?", "What colour is it?"], [(32, 32), (40, 64)], prefix="a")
    long = _samples(QUESTIONS[1::3], [(32, 32), (64, 20)], prefix="b")
    together = extract_counts(model, processor, short + long, batch_size=4, progress=False)
    alone = [extract_counts(model, processor, part, batch_size=4, progress=False) for part in (short, long)]
    assert_same_counts(together, merge(alone))


def test_bad_images_are_skipped_reported_and_limited(caplog):
    model, processor = build_tiny("llava_next")
    samples = _samples()
    samples[1].image = b"not an image"
    samples[3].image = b""
    counts = extract_counts(model, processor, samples, batch_size=2, max_bad_share=0.4, progress=False)
    assert [entry["sample_id"] for entry in counts.skipped] == ["s1", "s3"]
    assert "corrupt image" in counts.skipped[0]["reason"] and "no image bytes" in counts.skipped[1]["reason"]
    assert "s1" in caplog.text and "s3" in caplog.text
    good = [sample for sample in samples if sample.image not in (b"", b"not an image")]
    assert_same_counts(counts, extract_counts(model, processor, good, batch_size=2, progress=False))
    assert counts.samples == 3

    with pytest.raises(ExtractionError, match=r"2 of 5 samples are bad, more than max_bad_share=0.2: s1: .*; s3: "):
        extract_counts(model, processor, samples, max_bad_share=0.2, progress=False)
    with pytest.raises(ExtractionError, match=r"1 of 5 samples are bad.*s1"):
        extract_counts(model, processor, samples, progress=False)


def test_prompt_and_domain_errors():
    model, processor = build_tiny("paligemma")
    with pytest.raises(InputError, match=r"needs a \{question\} field: '\{q\}'"):
        extract_counts(model, processor, _samples(), prompt_template="{q}", progress=False)
    with pytest.raises(InputError, match=r"'<image>' more than once"):
        extract_counts(model, processor, _samples(), prompt_template="<image>{question}<image>", progress=False)
    with pytest.raises(InputError, match=r"sample s0 \(rs\): .*'\{question\} \{role\}'"):
        extract_counts(model, processor, _samples(), prompt_template="{question} {role}", progress=False)
    mixed = _samples()
    mixed[0].domain = "doc"
    with pytest.raises(ExtractionError, match=r"one domain .*\['doc', 'rs'\]"):
        extract_counts(model, processor, mixed, progress=False)
    with pytest.raises(ExtractionError, match=r"from domain 'doc', got \['rs'\]"):
        extract_counts(model, processor, _samples(), domain="doc", progress=False)
    empty = extract_counts(model, processor, [], domain="rs", progress=False)
    assert empty.samples == 0 and all(int(tokens.sum()) == 0 for tokens in empty.tokens.values())


def test_shards_are_contiguous_and_cover_the_list():
    items = list(range(10))
    parts = [shard(items, i, 4) for i in range(1, 5)]
    assert parts == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    assert shard(items, 1, 6) + shard(items, 2, 6) + shard(items, 3, 6) == shard(items, 1, 2)
    assert shard(items[:1], 1, 2) == [] and shard(items[:1], 2, 2) == [0]
    # whole units (batches): 10 items in units of 3 are 4 units, shards of 1 + 1 units of 4
    assert shard(items, 1, 2, unit=3) == [0, 1, 2, 3, 4, 5] and shard(items, 2, 2, unit=3) == [6, 7, 8, 9]
    assert [len(shard(items, i, 3, unit=4)) for i in (1, 2, 3)] == [4, 4, 2]
    assert shard_spec("2/3") == (2, 3)
    for text in ("0/3", "4/3", "a/3", "3"):
        with pytest.raises(argparse.ArgumentTypeError, match="i/n"):
            shard_spec(text)


@pytest.mark.parametrize("arch", ["llava_next", "qwen2_vl"])
def test_cli_end_to_end(tmp_path, arch):
    model_dir = save_tiny(arch, tmp_path / "model")
    data = tmp_path / "stats.parquet"
    write_samples(_samples(), data)
    out = tmp_path / "counts" / "rs.half2.safetensors"
    argv = [
        "extract",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--out",
        str(out),
        "--name",
        "tiny",
        "--batch-size",
        "2",
        "--limit",
        "4",
        "--shard",
        "2/2",
        "--sites",
        "lm",
        "vision",
        "--prompt",
        r"<image>\nQuestion: {question}",
        "--no-progress",
    ]
    assert cli.main(argv) == 0

    counts = Counts.load(out)
    assert (counts.model, counts.domain, counts.samples, sorted(counts.sites)) == ("tiny", "rs", 2, ["lm", "vision"])
    assert counts.settings["prompt"] == "<image>\nQuestion: {question}"
    assert {key: counts.settings[key] for key in ("limit", "shard", "data", "device")} == {
        "limit": 4,
        "shard": "2/2",
        "data": str(data),
        "device": "cpu",
    }
    assert set(counts.versions) == {"mmneuron", "transformers", "torch"}
    model, processor = load_model(model_dir, device="cpu")
    expected = extract_counts(
        model,
        processor,
        read_samples(data)[2:4],
        prompt_template="<image>\nQuestion: {question}",
        sites=["lm", "vision"],
        progress=False,
    )
    assert_same_counts(counts, expected)


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="model folder not found: .*nowhere"):
        load_model(tmp_path / "nowhere")
    LlamaConfig(num_hidden_layers=1).save_pretrained(tmp_path / "llama")
    with pytest.raises(ModelLoadError, match="unsupported model type 'llama'; supported: llava"):
        load_model(tmp_path / "llama")
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        load_model(save_tiny("paligemma", tmp_path / "pali"), dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            load_model(tmp_path / "pali", device="cuda")


def test_words_outside_the_vocabulary_are_counted_as_unknown_tokens(caplog):
    model, processor = build_tiny("llava_next")
    known = extract_counts(model, processor, _samples([QUESTIONS[0], QUESTIONS[2]], SIZES[:2]), progress=False)
    assert known.settings["unknown_tokens"] == 0
    # "puppy", "kitten" and "sofa" are not among the tiny tokenizer's words (tiny.WORDS)
    questions = ["What colour is the puppy?", "Is the kitten on the sofa?"]
    unknown = extract_counts(model, processor, _samples(questions, SIZES[:2]), batch_size=1, progress=False)
    assert unknown.settings["unknown_tokens"] == 3
    assert "3 prompt tokens are the tokenizer's unknown token" in caplog.text
