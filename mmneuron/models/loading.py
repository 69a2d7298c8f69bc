"""Load a supported vision-language model and its processor from a folder or a Hugging Face id."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin

from mmneuron.errors import MmneuronError
from mmneuron.models.processors import IMAGE_ONLY_PROCESSORS
from mmneuron.models.sites import SUPPORTED_MODEL_TYPES, ResolvedSite, resolve_sites

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(MmneuronError):
    """A model that cannot be loaded; the message names the path or id."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested, but no CUDA GPU is available")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a GPU, float32 on the CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; expected auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def check_supported(config, name: str) -> None:
    """Refuse a model whose type has no entry in the site registry."""
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"{name}: unsupported model type {config.model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )


def _looks_like_path(name: str) -> bool:
    # Hugging Face ids are "name" or "owner/name"; anything else is meant as a local folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def read_config(name: str, trust_remote_code: bool = False):
    """The config of a supported model folder or hub id."""
    if _looks_like_path(name) and not Path(name).expanduser().is_dir():
        raise ModelLoadError(f"model folder not found: {name}")
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read the model config of {name!r}: {error}") from None
    check_supported(config, name)
    return config


def model_sites(path_or_id: str | Path, trust_remote_code: bool = False) -> list[ResolvedSite]:
    """The sites of a model built from its config on the meta device: their shapes without reading
    (or allocating) a single weight, so a 7B model's are known in seconds on any machine."""
    config = read_config(str(path_or_id), trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code)
    return resolve_sites(model)


def load_model(
    path_or_id: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    device_map: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The model (eval mode, on ``device`` in ``dtype``) and its processor.

    ``device_map`` (``auto``, ``cpu``, ``cuda:0`` ...) places the model with accelerate instead, for a
    model that does not fit one device; ``device`` then only decides what ``dtype: auto`` means.
    ``attn_implementation`` (``eager``, ``sdpa``, ``flash_attention_2``) is passed on when given, and
    ``trust_remote_code`` (off by default) lets a checkpoint run code from its repository.

    The model type must be one of :data:`~mmneuron.models.sites.SUPPORTED_MODEL_TYPES`. Hub ids
    are read from the local Hugging Face cache when offline.
    """
    name = str(path_or_id)
    config = read_config(name, trust_remote_code)
    target = resolve_device(device)
    processor_class = IMAGE_ONLY_PROCESSORS.get(config.model_type, AutoProcessor)
    placement = {"device_map": device_map} if device_map else {}
    if attn_implementation:
        placement["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            name, dtype=resolve_dtype(dtype, target), trust_remote_code=trust_remote_code, **placement
        )
        processor = processor_class.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError, SafetensorError) as error:
        raise ModelLoadError(f"cannot load the model or processor of {name!r}: {error}") from None
    model = (model if device_map else model.to(target)).eval()
    if not isinstance(processor, ProcessorMixin):
        raise ModelLoadError(
            f"{name}: expected a multimodal processor (images and text), got {type(processor).__name__}"
        )
    return model, processor
