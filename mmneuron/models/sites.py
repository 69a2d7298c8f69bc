"""Where each supported architecture's MLP neurons live: a declarative registry of sites.

A *site* is one kind of MLP activation module repeated over layers (``lm``, ``vision``,
``projector``, and for InstructBLIP ``qformer`` and ``query``). Its neurons are the outputs of
that activation module; a neuron is active at a position when its output is > 0.

Each site states which token positions its module sees (``POSITIONS``):

- ``language``: the language model's sequence; padding excluded, split by the image token into
  image and text positions;
- ``vision``: the vision tower's positions (per image or tile: its prefix tokens such as CLIP's
  CLS, then its patches); the models drop padded crops and images before the tower, so every
  position counts, except LLaVA-NeXT's tile padding (see ``mmneuron.models.inputs``);
- ``features``: the projector's positions, the image features after the vision tower;
- ``query``: the Q-Former's learned query tokens (image positions);
- ``instruction``: the Q-Former's instruction tokens (text positions), masked by
  ``qformer_attention_mask``.

Module names are matched by full-match regular expressions over ``model.named_modules()``; a
``layer`` group numbers the layers (a site without it has one layer, 0). The width is the
``out_features`` of a sibling linear layer (``fc1``, ``gate_proj`` ...). Anything that does not
resolve exactly raises :class:`SiteError` naming the model type, site and pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from mmneuron.counts import SiteInfo
from mmneuron.errors import MmneuronError

POSITIONS = ("language", "vision", "features", "query", "instruction")
IMAGE = "<image>"


class SiteError(MmneuronError):
    """A model whose sites cannot be resolved; the message names the model type and site."""


@dataclass(frozen=True)
class SiteSpec:
    name: str
    pattern: str  # full match over module names; group "layer" for multi-layer sites
    width_from: str  # sibling module (same parent) whose out_features is the width
    positions: str
    # (model config, number of layers) -> layers that cannot affect the model's output
    inert: Callable[[object, int], tuple[int, ...]] | None = None


@dataclass(frozen=True)
class Architecture:
    sites: tuple[SiteSpec, ...]
    prompt: Callable[[str], str]  # "<image>\n..." -> the processor's prompt
    # Position id of the first real token when padding precedes real tokens; None: the model
    # computes its positions from the attention mask itself (Qwen2-VL's multimodal RoPE).
    first_position: int | None = 0
    # The answer scored after a prompt goes in as the processor's causal `suffix` (PaliGemma's
    # prompt is a bidirectional prefix), not appended to the prompt text.
    answer_as_suffix: bool = False


@dataclass(frozen=True)
class ResolvedSite:
    """One site of a loaded model: its activation modules by layer and its shape."""

    name: str
    positions: str
    width: int
    inert_layers: tuple[int, ...]
    module_names: tuple[str, ...]
    modules: tuple[nn.Module, ...]

    @property
    def layers(self) -> int:
        return len(self.modules)

    def info(self) -> SiteInfo:
        return SiteInfo(self.layers, self.width, self.inert_layers)


def _after_feature_layer(config, layers: int) -> tuple[int, ...]:
    """LLaVA reads the vision tower's ``vision_feature_layer`` (an index into hidden_states:
    0 = embeddings, k = after encoder layer k-1); the encoder layers after it are inert."""
    selected = config.vision_feature_layer
    selected = selected if isinstance(selected, (list, tuple)) else [selected]
    last = max(index if index >= 0 else layers + 1 + index for index in selected)
    if not 0 <= last <= layers:
        raise SiteError(
            f"{config.model_type}: vision_feature_layer {config.vision_feature_layer} is out of range "
            f"for a vision tower of {layers} layers"
        )
    return tuple(range(last, layers))


def _last_layer(config, layers: int) -> tuple[int, ...]:
    # Only the query part of the Q-Former output moves on, so the last layer's instruction-token
    # FFN feeds nothing.
    return (layers - 1,)


def _unchanged(text: str) -> str:
    return text


def _qwen_prompt(text: str) -> str:
    return text.replace(IMAGE, "<|vision_start|><|image_pad|><|vision_end|>")


def _instructblip_prompt(text: str) -> str:
    # the processor puts the query-token placeholders in front itself
    return text.replace(IMAGE, "").strip()


def _paligemma_prompt(text: str) -> str:
    # image first; the processor adds BOS after the image tokens and a closing newline
    return IMAGE + text.replace(IMAGE, "").strip()


_LAYER = r"(?P<layer>\d+)"
_LLAVA_SITES = (
    SiteSpec("lm", rf"model\.language_model\.layers\.{_LAYER}\.mlp\.act_fn", "gate_proj", "language"),
    SiteSpec(
        "vision",
        rf"model\.vision_tower\.(?:vision_model\.)?encoder\.layers\.{_LAYER}\.mlp\.activation_fn",
        "fc1",
        "vision",
        inert=_after_feature_layer,
    ),
    SiteSpec("projector", r"model\.multi_modal_projector\.act", "linear_1", "features"),
)
_QWEN_LM = SiteSpec("lm", rf"model\.language_model\.layers\.{_LAYER}\.mlp\.act_fn", "gate_proj", "language")
_QWEN_MERGER = SiteSpec("projector", r"model\.visual\.merger\.mlp\.1", "0", "features")
_IDEFICS3 = Architecture(
    sites=(
        SiteSpec("lm", rf"model\.text_model\.layers\.{_LAYER}\.mlp\.act_fn", "gate_proj", "language"),
        SiteSpec("vision", rf"model\.vision_model\.encoder\.layers\.{_LAYER}\.mlp\.activation_fn", "fc1", "vision"),
    ),
    prompt=_unchanged,
)

ARCHITECTURES: dict[str, Architecture] = {
    "llava": Architecture(_LLAVA_SITES, _unchanged),
    "llava_next": Architecture(_LLAVA_SITES, _unchanged),
    "instructblip": Architecture(
        sites=(
            SiteSpec("lm", rf"language_model\.model\.layers\.{_LAYER}\.mlp\.act_fn", "gate_proj", "language"),
            SiteSpec("vision", rf"vision_model\.encoder\.layers\.{_LAYER}\.mlp\.activation_fn", "fc1", "vision"),
            SiteSpec(
                "qformer",
                rf"qformer\.encoder\.layer\.{_LAYER}\.intermediate\.intermediate_act_fn",
                "dense",
                "instruction",
                inert=_last_layer,
            ),
            SiteSpec(
                "query",
                rf"qformer\.encoder\.layer\.{_LAYER}\.intermediate_query\.intermediate_act_fn",
                "dense",
                "query",
            ),
        ),
        prompt=_instructblip_prompt,
    ),
    "qwen2_vl": Architecture(
        sites=(
            _QWEN_LM,
            SiteSpec("vision", rf"model\.visual\.blocks\.{_LAYER}\.mlp\.act", "fc1", "vision"),
            _QWEN_MERGER,
        ),
        prompt=_qwen_prompt,
        first_position=None,
    ),
    "qwen2_5_vl": Architecture(
        sites=(
            _QWEN_LM,
            SiteSpec("vision", rf"model\.visual\.blocks\.{_LAYER}\.mlp\.act_fn", "gate_proj", "vision"),
            _QWEN_MERGER,
        ),
        prompt=_qwen_prompt,
        first_position=None,
    ),
    "idefics3": _IDEFICS3,
    "smolvlm": _IDEFICS3,
    "paligemma": Architecture(
        sites=(
            SiteSpec("lm", rf"model\.language_model\.layers\.{_LAYER}\.mlp\.act_fn", "gate_proj", "language"),
            SiteSpec("vision", rf"model\.vision_tower\.encoder\.layers\.{_LAYER}\.mlp\.activation_fn", "fc1", "vision"),
        ),
        prompt=_paligemma_prompt,
        first_position=1,  # PaliGemma counts positions from 1
        answer_as_suffix=True,
    ),
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(ARCHITECTURES)


def architecture(model_type: str) -> Architecture:
    """The registry entry of ``model_type``; an unsupported type raises, listing the supported ones."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise SiteError(
            f"unsupported model type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        ) from None


def site_names(model_type: str) -> tuple[str, ...]:
    return tuple(spec.name for spec in architecture(model_type).sites)


def image_prompt(model_type: str, text: str) -> str:
    """Rewrite ``text``, holding the placeholder ``<image>`` once, into ``model_type``'s processor prompt."""
    arch = architecture(model_type)
    if text.count(IMAGE) != 1:
        raise ValueError(f"prompt must contain {IMAGE!r} exactly once: {text!r}")
    return arch.prompt(text)


def image_token_id(model: nn.Module) -> int:
    """The id marking image positions in the language model's input."""
    token = getattr(model.config, "image_token_id", None)
    if token is None:
        raise SiteError(f"{model.config.model_type}: the model config defines no image_token_id")
    return int(token)


def resolve_sites(model: nn.Module, names: Sequence[str] | None = None) -> list[ResolvedSite]:
    """The sites ``names`` (default: all of the architecture's, in registry order) of ``model``."""
    model_type = model.config.model_type
    specs = architecture(model_type).sites
    if names is not None:
        known = [spec.name for spec in specs]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise SiteError(f"{model_type} has no site(s) {unknown}; its sites: {', '.join(known)}")
        specs = [spec for spec in specs if spec.name in names]
    modules = dict(model.named_modules())
    return [_resolve(spec, model_type, modules, model.config) for spec in specs]


def _resolve(spec: SiteSpec, model_type: str, modules: dict[str, nn.Module], config) -> ResolvedSite:
    where = f"{model_type} site '{spec.name}'"
    pattern = re.compile(spec.pattern)
    by_layer: dict[int, str] = {}
    for name in modules:
        match = pattern.fullmatch(name)
        if match:
            layer = int(match.group("layer")) if "layer" in pattern.groupindex else 0
            if layer in by_layer:
                raise SiteError(f"{where}: modules {by_layer[layer]!r} and {name!r} both match layer {layer}")
            by_layer[layer] = name
    if not by_layer:
        raise SiteError(f"{where}: no module matches the pattern {spec.pattern!r}")
    layers = sorted(by_layer)
    if layers != list(range(len(layers))):
        raise SiteError(f"{where}: pattern {spec.pattern!r} matches layers {layers}, not 0..{len(layers) - 1}")
    names = tuple(by_layer[layer] for layer in layers)
    widths = {_width(name, spec, where, modules) for name in names}
    if len(widths) != 1:
        raise SiteError(f"{where}: layers differ in width ({sorted(widths)})")
    inert = spec.inert(config, len(names)) if spec.inert else ()
    return ResolvedSite(
        name=spec.name,
        positions=spec.positions,
        width=widths.pop(),
        inert_layers=tuple(inert),
        module_names=names,
        modules=tuple(modules[name] for name in names),
    )


def _width(name: str, spec: SiteSpec, where: str, modules: dict[str, nn.Module]) -> int:
    sibling = f"{name.rpartition('.')[0]}.{spec.width_from}"
    width = getattr(modules.get(sibling), "out_features", None)
    if width is None:
        raise SiteError(f"{where}: expected a linear layer {sibling!r} beside {name!r} to give the width")
    return int(width)
