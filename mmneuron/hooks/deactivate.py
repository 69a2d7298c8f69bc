"""Deactivate neurons: change chosen outputs of activation modules (set them to 0 by default).

:class:`Deactivation` puts a forward hook on every layer's activation module that holds a chosen
neuron; the hook returns a copy of the module output with the chosen entries of the last
dimension (the neurons) changed as its :class:`Intervention` says: set to a fixed ``value`` (the
paper's 0), set to the neuron's mean activation, or multiplied by a factor; at every position or
at image or text positions only; on every call - the prefill and each decoding step alike - or
during the prefill only. Nothing else changes: no forward is replaced, the model's tensors and
modules stay as they are, and every hook is removed when the context ends (also on an exception),
so outputs after the context are bit-identical to outputs before it.

An intervention restricted to some positions or to the prefill needs, before each forward or
``generate`` call, the language model's positions of that input (:meth:`Deactivation.set_positions`).
The first call of a module after it is the prefill (or the one teacher-forced forward); every later
call is a decoding step, whose new token is a text position. A teacher-forced answer's positions
(``answer``) are decoding steps too, so a prefill-only intervention leaves them alone. Sites other
than the language model's see image positions only (vision tower, projector, Q-Former queries) or
text positions only (Q-Former instruction tokens): there an intervention applies at every position
or at none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mmneuron.errors import MmneuronError
from mmneuron.hooks.context import ForwardHooks
from mmneuron.models.sites import ResolvedSite, resolve_sites

Neurons = Mapping[str, Iterable[tuple[int, int]]]  # site -> (layer, neuron) pairs

FIXED, MEAN, SCALE = "fixed", "mean", "scale"  # what a chosen neuron outputs
EVERY, IMAGE, TEXT = "all", "image", "text"  # where
# the part of its positions each kind of site sees (mmneuron.models.sites.POSITIONS)
_SITE_PART = {"vision": IMAGE, "features": IMAGE, "query": IMAGE, "instruction": TEXT}


class DeactivationError(MmneuronError):
    """A neuron set that does not fit the model's sites, or a hook that meets an unexpected output."""


@dataclass(frozen=True)
class Intervention:
    """What a chosen neuron outputs (``mode``), where (``positions``) and when (``prefill_only``).

    ``fixed``: ``value``; ``mean``: its mean activation (given to :class:`Deactivation`);
    ``scale``: its own output times ``factor``. The default is the paper's: 0 everywhere, always.
    """

    mode: str = FIXED
    value: float = 0.0
    factor: float = 1.0
    positions: str = EVERY
    prefill_only: bool = False

    def __post_init__(self) -> None:
        if self.mode not in (FIXED, MEAN, SCALE):
            raise DeactivationError(f"intervention mode must be {FIXED}, {MEAN} or {SCALE}, got {self.mode!r}")
        if self.positions not in (EVERY, IMAGE, TEXT):
            raise DeactivationError(
                f"intervention positions must be {EVERY}, {IMAGE} or {TEXT}, got {self.positions!r}"
            )

    @property
    def needs_positions(self) -> bool:
        """Whether each forward needs :meth:`Deactivation.set_positions` first."""
        return self.positions != EVERY or self.prefill_only

    def record(self) -> dict:
        """The intervention as recorded with results (the value or factor only where it is used)."""
        own = {FIXED: {"value": self.value}, MEAN: {}, SCALE: {"factor": self.factor}}[self.mode]
        return {"mode": self.mode, **own, "positions": self.positions, "prefill_only": self.prefill_only}


class Deactivation(ForwardHooks):
    """Context manager deactivating ``neurons`` (site -> ``(layer, neuron)`` pairs) of ``sites``.

    Sites left out of ``neurons``, and layers without a chosen neuron, get no hook. Entering
    twice without leaving raises.
    """

    def __init__(
        self,
        sites: Sequence[ResolvedSite],
        neurons: Neurons,
        intervention: Intervention = Intervention(),
        means: Mapping[str, torch.Tensor] | None = None,
    ):
        by_name = {site.name: site for site in sites}
        self.intervention = intervention
        self._targets: list[tuple[ResolvedSite, int, torch.Tensor]] = []
        # per forward: the language model's positions (set_positions) and, per hook, its calls since
        self._scopes: Mapping[str, torch.Tensor] | None = None
        self._answer: torch.Tensor | None = None
        self._calls: dict[tuple[str, int], int] = {}
        for name, pairs in neurons.items():
            site = by_name.get(name)
            if site is None:
                raise DeactivationError(f"no site '{name}' among the model's sites {sorted(by_name)}")
            per_layer: dict[int, set[int]] = {}
            for layer, neuron in pairs:
                layer, neuron = int(layer), int(neuron)
                if not 0 <= layer < site.layers or not 0 <= neuron < site.width:
                    raise DeactivationError(
                        f"site '{name}': neuron ({layer}, {neuron}) is outside its "
                        f"{site.layers} layers x {site.width} neurons"
                    )
                per_layer.setdefault(layer, set()).add(neuron)
            part = _SITE_PART.get(site.positions)
            if part is not None and intervention.positions not in (EVERY, part):
                continue  # the site sees no position of the intervention's kind
            for layer in sorted(per_layer):
                self._targets.append((site, layer, torch.tensor(sorted(per_layer[layer]), dtype=torch.long)))
        self._means: dict[tuple[str, int], torch.Tensor] = {}
        if intervention.mode == MEAN:
            for site, layer, index in self._targets:
                table = (means or {}).get(site.name)
                if table is None or tuple(table.shape) != (site.layers, site.width):
                    found = "none" if table is None else f"shape {tuple(table.shape)}"
                    raise DeactivationError(
                        f"site '{site.name}': mean activations of {site.layers} layers x {site.width} neurons "
                        f"are needed, got {found}"
                    )
                self._means[site.name, layer] = table[layer, index].float()

    def set_positions(self, scopes: Mapping[str, torch.Tensor], answer: torch.Tensor | None = None) -> None:
        """The language model's positions of the next forward: ``scopes`` its ``image`` and ``text``
        masks (batch x sequence, :func:`mmneuron.models.inputs.scope_masks`), ``answer`` those of a
        teacher-forced answer (decoding steps). The next call of each module is the prefill."""
        self._scopes, self._answer = scopes, answer
        self._calls = {}

    @property
    def count(self) -> int:
        """How many neurons are deactivated (at a site that sees the intervention's positions)."""
        return sum(len(index) for _, _, index in self._targets)

    def _forward_hooks(self):
        for site, layer, index in self._targets:
            yield site.modules[layer], self._hook(site, layer, index)

    def _where(self, site: ResolvedSite, layer: int, output: torch.Tensor) -> torch.Tensor | bool:
        """Where this call of the module changes its neurons: True (everywhere), False (nowhere) or a
        mask of the output's leading dimensions."""
        intervention = self.intervention
        if not intervention.needs_positions:
            return True
        if self._scopes is None:
            raise DeactivationError(
                f"site '{site.name}': an intervention at {intervention.positions} positions or in the prefill "
                "only needs the positions of each input (Deactivation.set_positions)"
            )
        call = self._calls.get((site.name, layer), 0)
        self._calls[site.name, layer] = call + 1
        if call:  # a decoding step: its new token is a text position
            return not intervention.prefill_only and intervention.positions != IMAGE
        if site.positions != "language":
            return True  # the prefill of a site whose every position is of the intervention's kind
        mask = None if intervention.positions == EVERY else self._scopes[intervention.positions]
        if intervention.prefill_only and self._answer is not None:
            mask = ~self._answer if mask is None else mask & ~self._answer
        if mask is None:
            return True
        if tuple(mask.shape) != tuple(output.shape[:-1]):
            raise DeactivationError(
                f"site '{site.name}' layer {layer}: positions of shape {tuple(mask.shape)} do not fit the "
                f"output {tuple(output.shape)}"
            )
        return mask

    def _busy_error(self) -> Exception:
        return DeactivationError("this deactivation is already active")

    def _hook(self, site: ResolvedSite, layer: int, index: torch.Tensor):
        intervention = self.intervention
        # the index (and the means), copied once to each device they meet
        on_device = {index.device: (index, self._means.get((site.name, layer)))}

        def hook(module: nn.Module, args, output):
            if not isinstance(output, torch.Tensor) or output.shape[-1] != site.width:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise DeactivationError(
                    f"site '{site.name}' layer {layer} ({site.module_names[layer]}): output {shape} "
                    f"does not end in the site's width {site.width}"
                )
            if output.device not in on_device:
                chosen, mean = on_device[index.device]
                on_device[output.device] = (chosen.to(output.device), None if mean is None else mean.to(output.device))
            where = self._where(site, layer, output)
            if where is False:
                return None  # the output as it is
            chosen, mean = on_device[output.device]
            if where is True and intervention.mode == FIXED:
                return output.index_fill(-1, chosen, intervention.value)
            old = output.index_select(-1, chosen)
            if intervention.mode == FIXED:
                new = torch.full_like(old, intervention.value)
            elif intervention.mode == MEAN:
                new = mean.to(old.dtype).expand_as(old)
            else:
                new = old * intervention.factor
            if where is not True:
                new = torch.where(where.to(old.device).unsqueeze(-1), new, old)
            return output.index_copy(-1, chosen, new)

        return hook


def deactivate(
    model: nn.Module,
    neurons: Neurons,
    intervention: Intervention = Intervention(),
    means: Mapping[str, torch.Tensor] | None = None,
) -> Deactivation:
    """A :class:`Deactivation` of ``neurons`` on ``model``, resolving only the sites named."""
    return Deactivation(resolve_sites(model, list(neurons)), neurons, intervention, means)
