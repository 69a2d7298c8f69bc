"""Batched answering: one image per prompt, left-padded through the input path, decoding pinned.

Greedy by default; with a ``temperature`` the answers are sampled from a generator seeded with
``seed`` (the global RNG is left as it was). Every setting that shapes decoding is passed
explicitly (:func:`decoding_settings`), so a checkpoint's ``generation_config.json`` (beam search,
a repetition penalty, sampling defaults) cannot change the answers; only the end-of-sequence and
padding token ids come from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from mmneuron.models.inputs import LEFT, encode

# Sampling as the authors' code sampled, at transformers' own defaults for the rest.
SAMPLING = {"top_k": 50, "top_p": 1.0}
NEUTRAL = {
    "num_beams": 1,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_new_tokens": 0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "encoder_repetition_penalty": 1.0,
    "renormalize_logits": False,
}


def _token_ids(model, processor) -> dict:
    """End-of-sequence and padding ids: the checkpoint's generation config, else its tokenizer's."""
    own = model.generation_config
    tokenizer = processor.tokenizer
    eos = own.eos_token_id if own.eos_token_id is not None else tokenizer.eos_token_id
    pad = own.pad_token_id if own.pad_token_id is not None else tokenizer.pad_token_id
    return {"eos_token_id": eos, "pad_token_id": pad if pad is not None else eos}


def decoding_settings(model, processor, max_new_tokens: int, temperature: float | None = None) -> dict:
    """Every decoding setting ``generate`` gets: greedy, or sampling at ``temperature``; recorded with the answers."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature is not None and temperature <= 0:
        raise ValueError(f"a sampling temperature must be positive, got {temperature}")
    if temperature is None:
        sampling = {"do_sample": False, "temperature": 1.0, "top_k": None, "top_p": 1.0}
    else:
        sampling = {"do_sample": True, "temperature": float(temperature), **SAMPLING}
    return {"max_new_tokens": max_new_tokens, **sampling, **NEUTRAL, **_token_ids(model, processor)}


@torch.no_grad()
def generate_answers(
    model,
    processor,
    prompts: Sequence[str],
    images: Sequence[Image.Image],
    settings: dict,
    batch_size: int = 16,
    progress: bool = True,
    seed: int = 0,
    on_inputs: Callable[[dict], None] | None = None,
) -> list[str]:
    """Answers (special tokens stripped) for each (prompt, image) pair, in order, decoded with
    ``settings`` (:func:`decoding_settings`); ``on_inputs`` sees each batch's inputs before it is answered."""
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} images")
    model.eval()
    answers = []
    devices = [model.device] if model.device.type != "cpu" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch", disable=not progress):
            batch = slice(start, start + batch_size)
            inputs = encode(model, processor, images[batch], prompts[batch], padding_side=LEFT).inputs
            inputs.pop("position_ids", None)  # generate counts positions from the attention mask itself
            if on_inputs is not None:
                on_inputs(inputs)
            output = model.generate(**inputs, **settings)
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            answers += [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
    return answers
