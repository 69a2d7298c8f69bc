"""Neuron sets from elsewhere: a file in LAPE's format, mapped to one site of a model.

LAPE (Tang et al., 2024) and the MMNeuron authors save their sets with ``torch.save`` as a list
over domains (or languages) of lists over layers of 1-D integer tensors of neuron indices. The
file names neither its sets nor the site it was found in, so the import is told both; it checks
that every set has the site's number of layers and every index is below the site's width, and
writes an ordinary :class:`~mmneuron.selection.Selection` (method ``external``, labelled so that
answers name it ``external_{label}``) that the ablation deactivates like any other (``SITE/from_NAME``
runs). An empty tensor is a layer without neurons,
and a set empty in every layer is kept as an empty set.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from .data.sources.base import file_digest
from .defaults import EXTERNAL_METHOD
from .selection import Selection, SelectionError, SiteSelection

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a set's name becomes part of a run's name and file path


def _read(path: Path) -> object:
    if not path.is_file():
        raise SelectionError(f"neuron sets file not found: {path}")
    try:
        # weights_only: tensors and lists only, no code runs from the file
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise SelectionError(f"{path}: not a torch.save file of neuron sets ({type(error).__name__})") from None


def _indices(path: Path, name: str, layer: int, entry: object, width: int) -> list[int]:
    where = f"{path}: set {name!r}, layer {layer}"
    if isinstance(entry, torch.Tensor):
        if entry.dtype.is_floating_point or entry.dtype.is_complex or entry.dtype == torch.bool or entry.dim() > 1:
            raise SelectionError(
                f"{where}: expected a 1-D tensor of neuron indices, got {entry.dtype} {list(entry.shape)}"
            )
        values = entry.reshape(-1).tolist()
    elif isinstance(entry, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in entry):
        values = list(entry)
    else:
        raise SelectionError(f"{where}: expected a tensor or list of neuron indices, got {type(entry).__name__}")
    outside = sorted({v for v in values if not 0 <= v < width})
    if outside:
        raise SelectionError(f"{where}: neuron index {outside[0]} does not fit the site's width {width}")
    return sorted(set(values))


def load_lape(
    path: str | Path,
    names: Sequence[str],
    site: str,
    layers: int,
    width: int,
    model: str,
    label: str,
    inert_layers: Sequence[int] = (),
) -> Selection:
    """The sets of a LAPE-format file as a selection of ``site`` (``layers`` x ``width`` neurons,
    ``inert_layers`` as the model's site has them) of ``model``, set i named ``names[i]``, the whole
    labelled ``label`` (its answers' method is ``external_{label}``); anything that does not fit
    names the file, set and layer."""
    path = Path(path)
    data = _read(path)
    if not isinstance(data, (list, tuple)):
        raise SelectionError(
            f"{path}: expected a list of neuron sets (one per domain or language), got {type(data).__name__}"
        )
    bad = [name for name in names if not NAME.fullmatch(name)]
    if bad:
        raise SelectionError(f"{path}: set name {bad[0]!r} is not a plain name (letters, digits, _ . -)")
    if len(set(names)) != len(names):
        raise SelectionError(f"{path}: the set names {list(names)} repeat a name")
    if len(data) != len(names):
        raise SelectionError(
            f"{path}: holds {len(data)} neuron sets, but {len(names)} names were given ({list(names)})"
        )
    by_domain = {}
    for name, per_layer in zip(names, data):
        if not isinstance(per_layer, (list, tuple)):
            raise SelectionError(f"{path}: set {name!r} is a {type(per_layer).__name__}, expected a list over layers")
        if len(per_layer) != layers:
            raise SelectionError(
                f"{path}: set {name!r} has {len(per_layer)} layers, but site '{site}' of {model} has {layers}"
            )
        by_domain[name] = [
            (layer, neuron)
            for layer, entry in enumerate(per_layer)
            for neuron in _indices(path, name, layer, entry, width)
        ]
    selected = {pair for pairs in by_domain.values() for pair in pairs}
    digest = file_digest(path)
    parameters = {"label": label, "file": path.name, "sha256": digest, "site": site, "names": list(names)}
    details = {"shortfall": 0}  # the sets are taken as they are
    info = SiteSelection(layers, width, "all", list(inert_layers), len(selected), by_domain, details=details)
    return Selection(model, list(names), {}, parameters, {site: info}, method=EXTERNAL_METHOD)
