"""Count, per neuron, the token positions at which an activation module's output is > 0.

:class:`ActivationRecorder` puts a forward hook on every layer's activation module of the given
sites. Each call adds, per layer and neuron, how many counted positions had output > 0, and how
many positions were counted, as int64 on the module's device; activations are never kept.

Which positions count is set by the caller before each forward, per kind of positions (see
``mmneuron.models.sites``): each kind splits its positions into disjoint *parts*, and each part is a
scope of its own, while scope ``all`` is the sum of the parts::

    language      parts image, text   -> scopes all, image, text
    vision, features, query
                  part  image         -> scopes all, image (equal)
    instruction   part  text          -> scopes all, text (equal)

A part's mask is a bool tensor with one entry per position of the module output (its leading
dimensions flattened, e.g. batch x sequence); padding is simply in no part. ``None`` for a kind
with one part means every position counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mmneuron.hooks.context import ForwardHooks
from mmneuron.models.sites import ResolvedSite

PARTS = {
    "language": ("image", "text"),
    "vision": ("image",),
    "features": ("image",),
    "query": ("image",),
    "instruction": ("text",),
}
# float32 adds integers exactly up to 2**24; larger inputs are counted in chunks of rows, which
# also bounds the temporary 0/1 matrix to about 2**26 entries.
_EXACT_ROWS = 2**24
_CHUNK_ENTRIES = 2**26


class RecordingError(RuntimeError):
    """Recording cannot go on (masks that do not fit the module output, hooks misplaced)."""


def scopes(positions: str) -> tuple[str, ...]:
    """The scopes recorded for a kind of positions: ``all`` and one per part."""
    return ("all", *PARTS[positions])


class ActivationRecorder(ForwardHooks):
    """Context manager counting active positions per neuron of ``sites`` while it is open."""

    def __init__(self, sites: Sequence[ResolvedSite]):
        names = [site.name for site in sites]
        if len(set(names)) != len(names):
            raise ValueError(f"sites given twice: {names}")
        self.sites = list(sites)
        self._masks: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
        # per (site, layer): [part counts (parts x width), part tokens (parts,), calls]
        self._totals: dict[tuple[str, int], list] = {}

    def _forward_hooks(self):
        for site in self.sites:
            for layer, module in enumerate(site.modules):
                yield module, self._hook(site, layer)

    def _busy_error(self) -> Exception:
        return RecordingError("this recorder is already recording")

    def set_masks(self, masks: Mapping[str, Mapping[str, torch.Tensor] | None]) -> None:
        """Positions to count from the next forward on: ``{kind: {part: bool mask} | None}``.

        Kinds left out count every position (allowed only for kinds with a single part).
        """
        self._masks = {}
        for kind, parts in masks.items():
            if kind not in PARTS:
                raise ValueError(f"unknown kind of positions {kind!r}; expected one of {list(PARTS)}")
            if parts is None:
                self._masks[kind] = None
                continue
            if set(parts) != set(PARTS[kind]):
                raise ValueError(f"{kind} positions need masks for {PARTS[kind]}, got {sorted(parts)}")
            rows = [parts[part].reshape(-1).bool() for part in PARTS[kind]]
            if len({row.numel() for row in rows}) != 1:
                raise ValueError(f"{kind} masks differ in size: {[row.numel() for row in rows]}")
            matrix = torch.stack(rows)
            if len(rows) > 1 and bool((matrix.sum(0) > 1).any()):
                raise ValueError(f"{kind} masks overlap: a position may belong to one part only (scope all sums them)")
            self._masks[kind] = (matrix.float(), matrix.sum(1, dtype=torch.int64))

    def _hook(self, site: ResolvedSite, layer: int):
        def hook(module, args, output):
            self._count(site, layer, output)

        return hook

    def _count(self, site: ResolvedSite, layer: int, output: torch.Tensor) -> None:
        where = f"site '{site.name}' layer {layer} ({site.module_names[layer]})"
        if not isinstance(output, torch.Tensor) or output.shape[-1] != site.width:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise RecordingError(f"{where}: output {shape} does not end in the site's width {site.width}")
        values = output.detach().reshape(-1, site.width)
        masks = self._masks.get(site.positions)
        if masks is None:
            if len(PARTS[site.positions]) > 1:
                raise RecordingError(
                    f"{where}: no masks for {site.positions} positions; call set_masks before each forward"
                )
            positions = values.shape[0]
            matrix = torch.ones(1, positions, device=values.device)
            tokens = torch.tensor([positions], dtype=torch.int64, device=values.device)
        else:
            matrix, tokens = masks
            if matrix.shape[1] != values.shape[0]:
                raise RecordingError(
                    f"{where}: the {site.positions} masks cover {matrix.shape[1]} positions but the module "
                    f"output has {values.shape[0]} (a forward with a cache, e.g. generate, does not fit the masks)"
                )
            matrix, tokens = matrix.to(values.device), tokens.to(values.device)
        counts = _masked_counts(matrix, values)
        total = self._totals.get((site.name, layer))
        if total is None:
            self._totals[site.name, layer] = [counts, tokens.clone(), 1]  # tokens may be the masks' own
        else:
            total[0] += counts
            total[1] += tokens
            total[2] += 1

    def results(self) -> tuple[dict[tuple[str, str], torch.Tensor], dict[tuple[str, str], torch.Tensor]]:
        """``(active, tokens)`` keyed by ``(site, scope)``: layers x width and layers, int64 on CPU."""
        active, tokens = {}, {}
        for site in self.sites:
            parts = PARTS[site.positions]
            calls = [self._totals.get((site.name, layer), [None, None, 0])[2] for layer in range(site.layers)]
            if len(set(calls)) > 1:
                raise RecordingError(f"site '{site.name}': its layers ran different numbers of times: {calls}")
            counts = torch.zeros(site.layers, len(parts), site.width, dtype=torch.int64)
            seen = torch.zeros(site.layers, len(parts), dtype=torch.int64)
            for layer in range(site.layers):
                if (site.name, layer) in self._totals:
                    counts[layer], seen[layer] = (t.cpu() for t in self._totals[site.name, layer][:2])
            active[site.name, "all"], tokens[site.name, "all"] = counts.sum(1), seen.sum(1)
            for index, part in enumerate(parts):
                active[site.name, part], tokens[site.name, part] = counts[:, index].clone(), seen[:, index].clone()
        return active, tokens


def _masked_counts(matrix: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per part and neuron, the masked positions with a value > 0: ``matrix @ (values > 0)``, exactly."""
    rows = max(1, min(_EXACT_ROWS, _CHUNK_ENTRIES // values.shape[1]))
    # the comparison writes 0/1 straight into float32, far faster than a bool tensor converted after
    buffer = torch.empty(min(rows, values.shape[0]), values.shape[1], dtype=torch.float32, device=values.device)
    counts = torch.zeros(matrix.shape[0], values.shape[1], dtype=torch.int64, device=values.device)
    for start in range(0, values.shape[0], rows):
        block = values[start : start + rows]
        active = torch.gt(block, 0, out=buffer[: block.shape[0]])
        counts += (matrix[:, start : start + rows] @ active).round().to(torch.int64)
    return counts
