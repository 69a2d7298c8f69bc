"""The paper's two 7B models as published on the Hugging Face hub, built offline without weights.

``published_configs/<name>/`` holds the hub's ``config.json``, ``preprocessor_config.json`` and
``processor_config.json`` values and the tokenizer's special-token ids (sources in that folder's
README). From them :func:`build_config` gives the model config (optionally with a truncated
language-model or vision depth), :func:`build_model` a model with random weights (on the meta
device by default: shapes only, no memory) and :func:`build_processor` the processor with the
published preprocessing and an offline word-level tokenizer whose special tokens sit at the
published ids, so that its image-token placeholders are the ids the model config expects.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    BlipImageProcessorPil,
    InstructBlipProcessor,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)

from mmneuron.errors import MmneuronError
from mmneuron.models.tiny import WORDS
from mmneuron.models.tokenizer import build_bert_style_tokenizer, build_fixed_id_tokenizer

CONFIGS = Path(__file__).with_name("published_configs")
FOLDERS = {
    "llava-hf/llava-v1.6-vicuna-7b-hf": "llava-v1.6-vicuna-7b-hf",
    "Salesforce/instructblip-vicuna-7b": "instructblip-vicuna-7b",
}
PUBLISHED_IDS: tuple[str, ...] = tuple(FOLDERS)
# keys of preprocessor_config.json that name classes or settings, not image-processor arguments
_NOT_ARGUMENTS = {"image_processor_type", "processor_class", "aspect_ratio_setting"}
_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token")


class PublishedModelError(MmneuronError):
    """A model id without a published configuration here; the message lists the known ones."""


@cache
def published(name: str, file: str) -> dict:
    """The stored JSON ``file`` (``config``, ``preprocessor_config``, ``processor_config`` or
    ``special_tokens``) of the published model ``name``."""
    if name not in FOLDERS:
        raise PublishedModelError(f"no published configuration for {name!r}; known: {', '.join(PUBLISHED_IDS)}")
    return json.loads((CONFIGS / FOLDERS[name] / f"{file}.json").read_text())


def build_config(name: str, text_layers: int | None = None, vision_layers: int | None = None) -> PretrainedConfig:
    """The published config of ``name``, with the language model cut to ``text_layers`` and the
    vision tower to ``vision_layers`` layers when given (the other sizes stay published)."""
    data = dict(published(name, "config"))
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    for sub, layers in (("text_config", text_layers), ("vision_config", vision_layers)):
        if layers is not None:
            if layers < 1:
                raise ValueError(f"{sub} depth must be at least 1, got {layers}")
            getattr(config, sub).num_hidden_layers = layers
    return config


def build_model(
    name: str,
    text_layers: int | None = None,
    vision_layers: int | None = None,
    device: str = "meta",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> PreTrainedModel:
    """``name``'s architecture with random weights (seeded; none on ``meta``), in eval mode."""
    config = build_config(name, text_layers, vision_layers)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    return model.eval()


def _tokenizer(specials: dict):
    roles = {role: specials[role] for role in _ROLES}
    return build_fixed_id_tokenizer(
        WORDS,
        specials["tokens"],
        specials["vocab_size"],
        roles,
        extra_special_tokens=[specials["image_token"]],
        padding_side="left",  # batched generation appends answers on the right
    )


def _image_processor_arguments(name: str) -> dict:
    return {key: value for key, value in published(name, "preprocessor_config").items() if key not in _NOT_ARGUMENTS}


def _processor_arguments(name: str) -> dict:
    return {key: value for key, value in published(name, "processor_config").items() if key != "processor_class"}


def build_processor(name: str) -> ProcessorMixin:
    """``name``'s processor from the published preprocessing values, with an offline tokenizer."""
    specials = published(name, "special_tokens")
    image_processor_type = published(name, "preprocessor_config")["image_processor_type"]
    if image_processor_type == "LlavaNextImageProcessor":
        return LlavaNextProcessor(
            image_processor=LlavaNextImageProcessorPil(**_image_processor_arguments(name)),
            tokenizer=_tokenizer(specials),
            **_processor_arguments(name),
        )
    qformer = specials["qformer"]
    return InstructBlipProcessor(
        image_processor=BlipImageProcessorPil(**_image_processor_arguments(name)),
        tokenizer=_tokenizer(specials),
        qformer_tokenizer=build_bert_style_tokenizer(
            WORDS, qformer["tokens"], qformer["vocab_size"], truncation_side=qformer["truncation_side"]
        ),
        **_processor_arguments(name),
    )
