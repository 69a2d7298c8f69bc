"""The paper's two 7B models from their published configs, built offline without weights."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmneuron.models import published
from mmneuron.models.loading import check_supported
from mmneuron.models.sites import image_prompt, resolve_sites

LLAVA, BLIP = published.PUBLISHED_IDS

# SPEC.md section 1, written out by hand: site -> (layers, width, inert layers)
SPEC_SITES = {
    LLAVA: {"lm": (32, 11008, ()), "vision": (24, 4096, (23,)), "projector": (1, 4096, ())},
    BLIP: {"lm": (32, 11008, ()), "vision": (39, 6144, ()), "qformer": (12, 3072, (11,)), "query": (12, 3072, ())},
}


@pytest.mark.parametrize("name", published.PUBLISHED_IDS)
def test_published_models_have_the_sites_of_the_paper(name):
    model = published.build_model(name)  # meta device: shapes only
    assert {site.name: (site.layers, site.width, site.inert_layers) for site in resolve_sites(model)} == SPEC_SITES[
        name
    ]


def test_truncated_depths_keep_the_published_widths():
    config = published.build_config(LLAVA, text_layers=1, vision_layers=2)
    assert (config.text_config.num_hidden_layers, config.vision_config.num_hidden_layers) == (1, 2)
    assert (config.text_config.intermediate_size, config.vision_config.intermediate_size) == (11008, 4096)
    assert published.build_config(LLAVA).text_config.num_hidden_layers == 32  # the stored values are not altered
    with pytest.raises(ValueError, match="at least 1"):
        published.build_config(BLIP, text_layers=0)


def test_unknown_id_names_the_known_ones():
    with pytest.raises(published.PublishedModelError, match="known: llava-hf/llava-v1.6-vicuna-7b-hf"):
        published.build_config("llava-hf/llava-1.5-7b-hf")


@pytest.mark.parametrize("name", published.PUBLISHED_IDS)
def test_processor_tokens_sit_at_the_model_config_ids(name):
    config = published.build_config(name)
    tokenizer = published.build_processor(name).tokenizer
    assert len(tokenizer) == config.text_config.vocab_size
    assert tokenizer.convert_tokens_to_ids("<image>") == config.image_token_id
    assert tokenizer.pad_token_id == {LLAVA: 32001, BLIP: 32000}[name]


def _image(size):
    # a gradient, so that no crop of it is blank
    width, height = size
    return Image.linear_gradient("L").resize((width, height)).convert("RGB")


def _image_tokens(encoded, model) -> int:
    return int((encoded["input_ids"] == model.config.image_token_id).sum())


# a photo, a LingoQA strip of 5 frames of 1920x1080 joined side by side, a tall document page
SIZES = {"photo": (672, 672), "strip": (5 * 1920, 1080), "page": (1700, 2200)}


@pytest.mark.slow
def test_llava_next_image_tokens_match_the_models_feature_count():
    # the real CLIP geometry (336-px tiles, 14-px patches, 1024 wide) at a depth of 1 (2.6 GB, float32)
    model = published.build_model(LLAVA, text_layers=1, vision_layers=1, device="cpu")
    processor = published.build_processor(LLAVA)
    counts = {}
    for kind, size in SIZES.items():
        encoded = processor(
            images=_image(size),
            text=image_prompt("llava_next", "USER: <image>\nWhat is it? ASSISTANT:"),
            return_tensors="pt",
        )
        with torch.no_grad():
            features = model.model.get_image_features(
                pixel_values=encoded["pixel_values"], image_sizes=encoded["image_sizes"]
            ).pooler_output
        assert _image_tokens(encoded, model) == sum(len(image) for image in features), kind
        counts[kind] = _image_tokens(encoded, model)
    # by hand for the photo: the 336-px overview (24 x 24 = 576) + the 672x672 grid of 2 x 2 tiles
    # (48 x 48 = 2304) + one newline per grid row (48)
    assert counts["photo"] == 576 + 2304 + 48


@pytest.mark.slow
def test_instructblip_gives_32_query_tokens_for_any_image():
    model = published.build_model(BLIP, text_layers=1, vision_layers=1, device="cpu")
    processor = published.build_processor(BLIP)
    for kind, size in SIZES.items():
        encoded = processor(
            images=_image(size), text=image_prompt("instructblip", "<image>\nWhat is it?"), return_tensors="pt"
        )
        with torch.no_grad():
            features = model.get_image_features(
                pixel_values=encoded["pixel_values"],
                qformer_input_ids=encoded["qformer_input_ids"],
                qformer_attention_mask=encoded["qformer_attention_mask"],
            ).pooler_output
        assert features.shape[1] == _image_tokens(encoded, model) == 32, kind


@pytest.mark.parametrize("name", published.PUBLISHED_IDS)
def test_the_loader_accepts_the_published_model_types(name):
    check_supported(published.build_config(name), name)  # raises for an unsupported type
