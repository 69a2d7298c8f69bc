"""Deactivate neurons: set chosen outputs of activation modules to a fixed value (0 by default).

:class:`Deactivation` puts a forward hook on every layer's activation module that holds a chosen
neuron; the hook returns a copy of the module output with the chosen entries of the last
dimension (the neurons) set to ``value``, at every position and on every call - the prefill and
each decoding step alike. Nothing else changes: no forward is replaced, the model's tensors and
modules stay as they are, and every hook is removed when the context ends (also on an exception),
so outputs after the context are bit-identical to outputs before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from mmneuron.errors import MmneuronError
from mmneuron.hooks.context import ForwardHooks
from mmneuron.models.sites import ResolvedSite, resolve_sites

Neurons = Mapping[str, Iterable[tuple[int, int]]]  # site -> (layer, neuron) pairs


class DeactivationError(MmneuronError):
    """A neuron set that does not fit the model's sites, or a hook that meets an unexpected output."""


class Deactivation(ForwardHooks):
    """Context manager deactivating ``neurons`` (site -> ``(layer, neuron)`` pairs) of ``sites``.

    Sites left out of ``neurons``, and layers without a chosen neuron, get no hook. Entering
    twice without leaving raises.
    """

    def __init__(self, sites: Sequence[ResolvedSite], neurons: Neurons, value: float = 0.0):
        by_name = {site.name: site for site in sites}
        self.value = float(value)
        self._targets: list[tuple[ResolvedSite, int, torch.Tensor]] = []
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
            for layer in sorted(per_layer):
                self._targets.append((site, layer, torch.tensor(sorted(per_layer[layer]), dtype=torch.long)))

    @property
    def count(self) -> int:
        """How many neurons are deactivated."""
        return sum(len(index) for _, _, index in self._targets)

    def _forward_hooks(self):
        for site, layer, index in self._targets:
            yield site.modules[layer], self._hook(site, layer, index)

    def _busy_error(self) -> Exception:
        return DeactivationError("this deactivation is already active")

    def _hook(self, site: ResolvedSite, layer: int, index: torch.Tensor):
        on_device = {index.device: index}  # the index, copied once to each device it meets

        def hook(module: nn.Module, args, output):
            if not isinstance(output, torch.Tensor) or output.shape[-1] != site.width:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise DeactivationError(
                    f"site '{site.name}' layer {layer} ({site.module_names[layer]}): output {shape} "
                    f"does not end in the site's width {site.width}"
                )
            if output.device not in on_device:
                on_device[output.device] = index.to(output.device)
            return output.index_fill(-1, on_device[output.device], self.value)

        return hook


def deactivate(model: nn.Module, neurons: Neurons, value: float = 0.0) -> Deactivation:
    """A :class:`Deactivation` of ``neurons`` on ``model``, resolving only the sites named."""
    return Deactivation(resolve_sites(model, list(neurons)), neurons, value)
