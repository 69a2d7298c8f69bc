"""Batched answering: prompts with one image each, left-padded, as `generate` expects.

Greedy by default; with a ``temperature`` the answers are sampled from a generator seeded with
``seed`` (the global RNG is left as it was).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import BatchFeature


def user_turn(processor, text: str) -> str:
    """``text`` as one user turn with an image, in the processor's chat template, ready for an answer."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, as `generate` computes them for left padding."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def encode(processor, images: Sequence[Image.Image], texts: Sequence[str], model) -> BatchFeature:
    """One batch as the processor makes it, padded, on the model's device with pixels in its dtype.

    A Q-Former's instruction tokens (InstructBLIP) are moved to the right of their padding: the
    processor pads them on the language tokenizer's side, and on the left BERT's absolute position
    embeddings would shift with the batch's longest instruction.
    """
    inputs = processor(images=list(images), text=list(texts), padding=True, return_tensors="pt")
    inputs.pop("labels", None)  # PaliGemma's processor adds labels
    if "qformer_attention_mask" in inputs:
        mask = inputs["qformer_attention_mask"].bool()
        order = torch.argsort((~mask).int(), dim=1, stable=True)  # real tokens first, in their order
        inputs["qformer_input_ids"] = inputs["qformer_input_ids"].gather(1, order)
        inputs["qformer_attention_mask"] = inputs["qformer_attention_mask"].gather(1, order)
    return inputs.to(model.device).to(model.dtype)  # .to(dtype) casts only the floating tensors (pixels)


@torch.no_grad()
def generate_answers(
    model,
    processor,
    prompts: Sequence[str],
    images: Sequence[Image.Image],
    batch_size: int = 16,
    max_new_tokens: int = 8,
    progress: bool = True,
    temperature: float | None = None,
    seed: int = 0,
) -> list[str]:
    """Answers (special tokens stripped) for each (prompt, image) pair, in order: greedy, or
    sampled at ``temperature`` when one is given."""
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} images")
    if processor.tokenizer.padding_side != "left":
        raise ValueError("generation needs a left-padding tokenizer (padding_side='left')")
    if temperature is not None and temperature <= 0:
        raise ValueError(f"a sampling temperature must be positive, got {temperature}")
    decoding = {"do_sample": False} if temperature is None else {"do_sample": True, "temperature": temperature}
    model.eval()
    answers = []
    starts = range(0, len(prompts), batch_size)
    devices = [model.device] if model.device.type != "cpu" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in tqdm(starts, desc="generate", unit="batch", disable=not progress):
            inputs = encode(processor, images[start : start + batch_size], prompts[start : start + batch_size], model)
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, **decoding)
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            answers += [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
    return answers
