"""The site registry: every architecture resolves to the expected modules, shapes and inert layers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from expected_sites import EXPECTED_SITES, module_names
from torch import nn
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)

from mmneuron.models.sites import (
    SUPPORTED_MODEL_TYPES,
    SiteError,
    image_prompt,
    image_token_id,
    resolve_sites,
    site_names,
)
from mmneuron.models.tiny import TINY_ARCHITECTURES, build_tiny


@pytest.fixture(scope="module")
def tiny_models():
    return {arch: build_tiny(arch)[0] for arch in TINY_ARCHITECTURES}


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_tiny_models_resolve_the_expected_sites(tiny_models, arch):
    model = tiny_models[arch]
    resolved = resolve_sites(model)
    assert [site.name for site in resolved] == list(EXPECTED_SITES[arch]) == list(site_names(arch))
    modules = dict(model.named_modules())
    for site in resolved:
        _, layers, width, inert, positions = EXPECTED_SITES[arch][site.name]
        assert (site.layers, site.width, site.inert_layers, site.positions) == (layers, width, inert, positions)
        assert list(site.module_names) == module_names(arch, site.name)
        assert all(module is modules[name] for module, name in zip(site.modules, site.module_names))
        assert site.info().to_dict() == {"layers": layers, "width": width, "inert_layers": list(inert)}
    assert image_token_id(model) == model.config.image_token_id


def test_a_subset_of_sites_in_registry_order(tiny_models):
    model = tiny_models["instructblip"]
    assert [site.name for site in resolve_sites(model, ["query", "lm"])] == ["lm", "query"]
    with pytest.raises(SiteError, match=r"instructblip has no site\(s\) \['projector'\].*qformer"):
        resolve_sites(model, ["projector"])


def test_unknown_model_type_is_refused():
    model = nn.Linear(2, 2)
    model.config = SimpleNamespace(model_type="mamba")
    with pytest.raises(SiteError, match="unsupported model type 'mamba'; supported: llava, llava_next"):
        resolve_sites(model)
    with pytest.raises(SiteError, match="mamba"):
        image_prompt("mamba", "<image>\nhi")


def test_a_pattern_matching_nothing_is_an_error():
    model = build_tiny("llava")[0]
    projector = model.model.multi_modal_projector
    projector.activation = projector.act  # as if a transformers release renamed the module
    del projector.act
    assert [site.name for site in resolve_sites(model, ["lm", "vision"])] == ["lm", "vision"]
    message = r"llava site 'projector': no module matches the pattern .*multi_modal_projector"
    with pytest.raises(SiteError, match=message):
        resolve_sites(model)


def test_missing_layers_and_missing_width_are_errors():
    model = build_tiny("paligemma")[0]
    mlp = model.model.language_model.layers[0].mlp
    mlp.act = mlp.act_fn
    del mlp.act_fn
    with pytest.raises(SiteError, match=r"paligemma site 'lm': pattern .* matches layers \[1\], not 0..0"):
        resolve_sites(model, ["lm"])
    vision_mlp = model.model.vision_tower.encoder.layers[0].mlp
    del vision_mlp.fc1
    with pytest.raises(SiteError, match=r"paligemma site 'vision': expected a linear layer .*layers\.0\.mlp\.fc1"):
        resolve_sites(model, ["vision"])


@pytest.mark.parametrize(
    "feature_layer, inert", [(-2, (2,)), (-1, ()), (3, ()), (0, (0, 1, 2)), (1, (1, 2)), ([-2, 0], (2,)), ([1, -1], ())]
)
def test_llava_inert_vision_layers_follow_the_feature_layer(tiny_models, feature_layer, inert):
    model = tiny_models["llava_next"]  # a 3-layer vision tower
    model.config.vision_feature_layer = feature_layer
    try:
        assert resolve_sites(model, ["vision"])[0].inert_layers == inert
    finally:
        model.config.vision_feature_layer = -2


def test_out_of_range_feature_layer_is_an_error(tiny_models):
    model = tiny_models["llava"]
    model.config.vision_feature_layer = -5
    try:
        with pytest.raises(SiteError, match="vision_feature_layer -5 is out of range for a vision tower of 3 layers"):
            resolve_sites(model, ["vision"])
    finally:
        model.config.vision_feature_layer = -2


def _on_meta(model_class, config):
    with torch.device("meta"):  # shapes only, no memory
        return model_class(config)


def _shapes(model) -> dict:
    return {site.name: (site.layers, site.width, site.inert_layers) for site in resolve_sites(model)}


# The paper's two 7B models: tests/test_published.py builds them from their published configs.


def test_qwen2_5_vl_and_smolvlm_resolve():
    qwen = Qwen2_5_VLConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 1, 1]},
        ),
        vision_config=dict(depth=3, hidden_size=16, intermediate_size=40, num_heads=2, out_hidden_size=32),
    )
    assert _shapes(_on_meta(Qwen2_5_VLForConditionalGeneration, qwen)) == {
        "lm": (2, 48, ()),
        "vision": (3, 40, ()),
        "projector": (1, 64, ()),  # the merger's first linear: 4 merged patches x 16
    }
    smol = SmolVLMConfig(
        text_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4),
        vision_config=dict(hidden_size=16, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2),
    )
    assert _shapes(_on_meta(SmolVLMForConditionalGeneration, smol)) == {"lm": (2, 48, ()), "vision": (3, 24, ())}


def test_every_supported_type_has_a_prompt():
    for model_type in SUPPORTED_MODEL_TYPES:
        prompt = image_prompt(model_type, "<image>\nWhat is it?")
        assert "What is it?" in prompt
    assert image_prompt("qwen2_5_vl", "<image>\nQ") == "<|vision_start|><|image_pad|><|vision_end|>\nQ"
    assert image_prompt("instructblip", "<image>\nQ") == "Q"
    assert image_prompt("paligemma", "<image>\nQ") == "<image>Q"
    with pytest.raises(ValueError, match="exactly once"):
        image_prompt("llava", "Q")
