"""Loading options reach from_pretrained: attention implementation, device map, trust_remote_code."""

from __future__ import annotations

import importlib.util
import json

import pytest

from mmneuron.models.loading import ModelLoadError, load_model
from mmneuron.models.tiny import save_tiny


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny("llava_next", tmp_path_factory.mktemp("tiny") / "model")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_the_attention_implementation_is_the_one_asked_for(tiny_folder, attn):
    model, _ = load_model(tiny_folder, device="cpu", attn_implementation=attn)
    assert model.config._attn_implementation == attn


def test_a_device_map_places_the_model_or_names_what_it_needs(tiny_folder):
    if importlib.util.find_spec("accelerate") is None:
        with pytest.raises(ModelLoadError, match="requires `accelerate`"):
            load_model(tiny_folder, device="cpu", device_map="cpu")
    else:
        model, _ = load_model(tiny_folder, device="cpu", device_map="cpu")
        assert set(model.hf_device_map.values()) == {"cpu"}


def test_remote_code_runs_only_when_trusted(tmp_path):
    folder = save_tiny("llava_next", tmp_path / "custom")
    # a checkpoint shipping its own classes, as a hub repository with custom code does
    (folder / "modeling_custom.py").write_text(
        "from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration\n\n\n"
        "class CustomConfig(LlavaNextConfig):\n    pass\n\n\n"
        "class CustomModel(LlavaNextForConditionalGeneration):\n    config_class = CustomConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "modeling_custom.CustomConfig",
        "AutoModelForImageTextToText": "modeling_custom.CustomModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    untrusted, _ = load_model(folder, device="cpu")
    assert type(untrusted).__name__ == "LlavaNextForConditionalGeneration"
    trusted, _ = load_model(folder, device="cpu", trust_remote_code=True)
    assert (type(trusted).__name__, type(trusted.config).__name__) == ("CustomModel", "CustomConfig")
