"""Count, per neuron, the token positions at which an activation module's output is > 0, and
sum its output, its square and take its maximum over those positions.

:class:`ActivationRecorder` puts a forward hook on every layer's activation module of the given
sites. Each call adds, per layer and neuron, how many counted positions had output > 0, and how
many positions were counted, as int64 on the module's device; with ``moments`` (the default) also
the sum and the sum of squares of the output over the counted positions (float64) and their
maximum (-inf where no position was counted). Activations are never kept. Every statistic is a sum
or a maximum over positions, so batches, shards and halves combine exactly (float sums up to
rounding: float64 sums of float32 or bfloat16 values).

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

import math
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

    def __init__(self, sites: Sequence[ResolvedSite], moments: bool = True):
        names = [site.name for site in sites]
        if len(set(names)) != len(names):
            raise ValueError(f"sites given twice: {names}")
        self.sites = list(sites)
        self.moments = moments
        self._masks: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
        # per (site, layer): [calls, part tokens (parts,), part counts (parts x width), and with moments
        # the parts' sums, sums of squares and maxima (parts x width)]
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
        stats = _masked_stats(matrix, values, self.moments)
        total = self._totals.get((site.name, layer))
        if total is None:
            self._totals[site.name, layer] = [1, tokens.clone(), *stats]  # tokens may be the masks' own
        else:
            total[0] += 1
            total[1] += tokens
            for index, value in enumerate(stats, start=2):
                if index == 5:  # the maxima
                    torch.maximum(total[index], value, out=total[index])
                else:
                    total[index] += value

    def _per_scope(self, index: int, fill: float, combine) -> dict[tuple[str, str], torch.Tensor]:
        """Totals entry ``index`` per (site, scope), on CPU: each part's, and ``all`` their ``combine``
        (a sum or a maximum over parts); ``fill`` where a layer never ran."""
        out = {}
        for site in self.sites:
            parts = PARTS[site.positions]
            calls = [self._totals.get((site.name, layer), [0])[0] for layer in range(site.layers)]
            if len(set(calls)) > 1:
                raise RecordingError(f"site '{site.name}': its layers ran different numbers of times: {calls}")
            shape = (len(parts),) if index == 1 else (len(parts), site.width)
            dtype = torch.int64 if index < 3 else torch.float64
            values = torch.full((site.layers, *shape), fill, dtype=dtype)
            for layer in range(site.layers):
                if (site.name, layer) in self._totals:
                    values[layer] = self._totals[site.name, layer][index].cpu()
            out[site.name, "all"] = combine(values)
            for position, part in enumerate(parts):
                out[site.name, part] = values[:, position].clone()
        return out

    def results(self) -> tuple[dict[tuple[str, str], torch.Tensor], dict[tuple[str, str], torch.Tensor]]:
        """``(active, tokens)`` keyed by ``(site, scope)``: layers x width and layers, int64 on CPU."""
        total = lambda values: values.sum(1)  # noqa: E731
        return self._per_scope(2, 0, total), self._per_scope(1, 0, total)

    def moment_results(self) -> tuple[dict, dict, dict]:
        """``(sums, squares, maxima)`` keyed by ``(site, scope)``: layers x width, float64 on CPU."""
        if not self.moments:
            raise RecordingError("this recorder records counts only (moments=False)")
        total = lambda values: values.sum(1)  # noqa: E731
        peak = lambda values: values.amax(1)  # noqa: E731
        return self._per_scope(3, 0, total), self._per_scope(4, 0, total), self._per_scope(5, -math.inf, peak)


def _masked_stats(matrix: torch.Tensor, values: torch.Tensor, moments: bool) -> list[torch.Tensor]:
    """Per part and neuron, the masked positions with a value > 0 (``matrix @ (values > 0)``, exactly),
    and with ``moments`` the masked values' sum and sum of squares (float64) and maximum."""
    rows = max(1, min(_EXACT_ROWS, _CHUNK_ENTRIES // values.shape[1]))
    # the comparison writes 0/1 straight into float32, far faster than a bool tensor converted after
    buffer = torch.empty(min(rows, values.shape[0]), values.shape[1], dtype=torch.float32, device=values.device)
    parts, width, device = matrix.shape[0], values.shape[1], values.device
    counts = torch.zeros(parts, width, dtype=torch.int64, device=device)
    if moments:
        sums = torch.zeros(parts, width, dtype=torch.float64, device=device)
        squares = torch.zeros(parts, width, dtype=torch.float64, device=device)
        maxima = torch.full((parts, width), -math.inf, dtype=torch.float64, device=device)
    for start in range(0, values.shape[0], rows):
        block, mask = values[start : start + rows], matrix[:, start : start + rows]
        active = torch.gt(block, 0, out=buffer[: block.shape[0]])
        counts += (mask @ active).round().to(torch.int64)
        if moments:
            wide, weights = block.double(), mask.double()
            sums += weights @ wide
            squares += weights @ wide.square_()
            for part in range(parts):
                picked = mask[part].nonzero().squeeze(1)  # index_select: far faster than a boolean index
                if picked.numel():
                    torch.maximum(maxima[part], block.index_select(0, picked).amax(0).double(), out=maxima[part])
    return [counts, sums, squares, maxima] if moments else [counts]
