"""The demo model: a small LLaVA-NeXT (CLIP vision tower, 2-layer projector, LLaMA language model).

It has the real architecture - the same classes, processor, image tiling and module names as
`llava-hf/llava-v1.6-vicuna-7b-hf` - at a size that trains on a laptop CPU in minutes.
Images of 64 px are tiled into 32-px crops (a 2x2 grid plus the downscaled whole image).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
)

from mmneuron.models.tokenizer import build_word_tokenizer

IMAGE_TOKEN = "<image>"
TILE = 32
GRID_PINPOINTS = [[TILE, TILE], [TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE]]
# Vicuna-style turns, as llava-v1.6-vicuna uses: "USER: <image>\n{question} ASSISTANT: {answer}</s>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %} {% else %}ASSISTANT: {{ message['content'][0]['text'] }}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
TEMPLATE_WORDS = ("USER", "ASSISTANT", ":")
# Weight init of the language model. transformers' default (0.02) suits 4096-wide models; at a
# width of 96 it leaves attention nearly uniform and learning slow (com and doc alone, 1000 steps
# of 16: 47.5% held-out with 0.02, 60.5% with 0.1, where the heading colour went from chance to 100%).
TEXT_INIT_STD = 0.1


@dataclass(frozen=True)
class DemoSize:
    """Widths and depths of the demo model (the MLP widths are what the neuron analysis sees)."""

    patch: int = 8
    vision_hidden: int = 96
    vision_mlp: int = 128
    vision_layers: int = 3  # LLaVA reads layer -2, so the last layer is causally inert, as in the paper
    text_hidden: int = 96
    text_mlp: int = 192
    text_layers: int = 4
    heads: int = 4


def build_demo_processor(vocabulary: Iterable[str], size: DemoSize = DemoSize()) -> LlavaNextProcessor:
    tokenizer = build_word_tokenizer(
        [*vocabulary, *TEMPLATE_WORDS], [IMAGE_TOKEN], padding_side="left", chat_template=CHAT_TEMPLATE
    )
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}, image_grid_pinpoints=GRID_PINPOINTS
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=size.patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        image_token=IMAGE_TOKEN,
        chat_template=CHAT_TEMPLATE,
    )


def build_demo_model(
    processor: LlavaNextProcessor, seed: int = 0, size: DemoSize = DemoSize()
) -> LlavaNextForConditionalGeneration:
    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        image_size=TILE,
        patch_size=size.patch,
        hidden_size=size.vision_hidden,
        intermediate_size=size.vision_mlp,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.heads,
        hidden_act="quick_gelu",
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.text_hidden,
        intermediate_size=size.text_mlp,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=TEXT_INIT_STD,
    )
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_grid_pinpoints=GRID_PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config)
    model.generation_config.do_sample = False
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
