"""The language model's text decoder: its layers, final norm and unembedding, and its residual stream.

Shared by the logit lens and the hidden-state perturbation. Works for the models whose text
decoder (``get_decoder()``) has a ``norm`` and ``layers``: the LLaMA, Qwen2, Gemma and
Mistral-style decoders in LLaVA(-NeXT), Qwen2-VL, Idefics3, PaliGemma, and InstructBLIP's causal LM.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from mmneuron.errors import MmneuronError
from mmneuron.models.inputs import forward_options


class DecoderError(MmneuronError):
    """A model whose text decoder cannot be read; the message names the model type."""


def final_norm_and_unembed(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The language model's final norm and its unembedding (``lm_head``)."""
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    norm = getattr(decoder, "norm", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(norm, nn.Module) or not isinstance(getattr(decoder, "layers", None), nn.ModuleList):
        raise DecoderError(f"no text decoder with a final `norm` and `layers` in model type {model_type!r}")
    if not isinstance(head, nn.Module):
        raise DecoderError(f"no output embedding (lm_head) in model type {model_type!r}")
    return norm, head


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    final_norm_and_unembed(model)  # the same checks, the same error
    return model.get_decoder().layers


@contextmanager
def _on_layer_outputs(layers: nn.ModuleList, fn: Callable[[int, torch.Tensor], None]):
    def hook(index: int):
        return lambda module, args, output: fn(index, output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def each_layer_output(model: nn.Module, inputs: Mapping, fn: Callable[[int, torch.Tensor], None]) -> None:
    """One forward (no cache, no logits beyond the last position) calling ``fn(layer, hidden)`` with
    each decoder layer's output (batch x seq x hidden, the residual stream before the final norm);
    every layer must run exactly once."""
    layers = decoder_layers(model)
    calls = Counter()

    def counted(index: int, hidden: torch.Tensor) -> None:
        calls[index] += 1
        fn(index, hidden)

    with _on_layer_outputs(layers, counted):
        model(**inputs, **forward_options(model))
    if [calls[i] for i in range(len(layers))] != [1] * len(layers):
        raise DecoderError(
            f"model type {model.config.model_type!r}: expected one call of each of its {len(layers)} decoder "
            f"layers per forward, got {[calls[i] for i in range(len(layers))]}"
        )
