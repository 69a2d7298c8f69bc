"""The tiny offline models: forward, generate, save/load round trip, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from mmneuron.models.tiny import TINY_ARCHITECTURES, build_tiny, image_prompt, save_tiny

QUESTIONS = ["<image>\nWhat colour is the car?", "<image>\nHow many dogs are there in this picture on the left?"]


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    wide = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return [Image.fromarray(square), Image.fromarray(wide)]


def _inputs(arch, processor):
    prompts = [image_prompt(arch, question) for question in QUESTIONS]
    return processor(images=_images(), text=prompts, return_tensors="pt", padding=True)


@pytest.fixture(scope="module", params=TINY_ARCHITECTURES)
def tiny(request):
    arch = request.param
    model, processor = build_tiny(arch)
    return arch, model, processor, _inputs(arch, processor)


def test_forward_batch_with_padding(tiny):
    _, model, processor, inputs = tiny
    assert processor.tokenizer.padding_side == "left"
    assert (inputs["attention_mask"] == 0).any(), "prompts of different lengths must be padded"
    image_positions = (inputs["input_ids"] == model.config.image_token_id).sum(dim=1)
    assert (image_positions > 0).all()

    with torch.no_grad():
        logits = model(**inputs).logits  # raises if image tokens and image features disagree

    vocab = model.config.get_text_config().vocab_size
    assert vocab >= len(processor.tokenizer)
    assert logits.shape == (2, inputs["input_ids"].shape[1], vocab)
    assert torch.isfinite(logits).all()


def test_special_token_ids_match_tokenizer(tiny):
    _, model, processor, _ = tiny
    tokenizer, text_config = processor.tokenizer, model.config.get_text_config()
    assert tokenizer.pad_token is not None
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(text_config, name) == getattr(tokenizer, name)
        assert getattr(model.generation_config, name) == getattr(tokenizer, name)
    assert model.generation_config.do_sample is False


def test_generate_adds_tokens(tiny):
    _, model, _, inputs = tiny
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    prompt_length = inputs["input_ids"].shape[1]
    assert output.shape[0] == 2
    assert prompt_length < output.shape[1] <= prompt_length + 3


def test_save_and_reload_round_trip(tiny, tmp_path_factory):
    arch, model, processor, inputs = tiny
    path = save_tiny(arch, tmp_path_factory.mktemp(arch))
    loaded_model = AutoModelForImageTextToText.from_pretrained(path).eval()
    loaded_processor = AutoProcessor.from_pretrained(path)
    assert type(loaded_model) is type(model)
    assert type(loaded_processor) is type(processor)

    loaded_inputs = _inputs(arch, loaded_processor)
    assert loaded_inputs.keys() == inputs.keys()
    for key in inputs:
        assert torch.equal(loaded_inputs[key], inputs[key]), key

    with torch.no_grad():
        assert torch.equal(loaded_model(**loaded_inputs).logits, model(**inputs).logits)


def test_same_seed_same_weights(tiny):
    arch, model, _, _ = tiny
    again = build_tiny(arch, seed=0)[0].state_dict()
    other = build_tiny(arch, seed=1)[0].state_dict()
    reference = model.state_dict()
    assert all(torch.equal(reference[name], again[name]) for name in reference)
    assert not all(torch.equal(reference[name], other[name]) for name in reference)


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="mamba.*llava_next"):
        build_tiny("mamba")
    with pytest.raises(ValueError, match="mamba"):
        image_prompt("mamba", "<image>\nhi")


def test_prompt_needs_one_placeholder():
    with pytest.raises(ValueError, match="exactly once"):
        image_prompt("llava", "no image here")
