"""Builders shared by the test modules."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mmneuron.models.sites import resolve_sites
from mmneuron.selection import Selection, SiteSelection


def noise_image(seed: int, size=(40, 30)) -> Image.Image:
    """A random RGB image of ``size`` (width, height), the same for the same seed."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def selection_for(model, by_domain: dict[str, dict[str, list]], samples: int = 4) -> Selection:
    """A neuron file's content for ``model``: per site, per domain, (layer, neuron) pairs."""
    sites = {}
    for site in resolve_sites(model):
        sets = {domain: sorted(map(tuple, per_site.get(site.name, []))) for domain, per_site in by_domain.items()}
        sites[site.name] = SiteSelection(
            layers=site.layers,
            width=site.width,
            scope="all",
            inert_layers=list(site.inert_layers),
            tau=0.1,
            tau_assign=0.1,
            candidates=10,
            k=10,
            entropy_cutoff=0.5,
            by_domain=sets,
            unassigned=[],
        )
    return Selection(
        model="tiny",
        domains=sorted(by_domain),
        samples={d: samples for d in by_domain},
        parameters={"top_rate": 0.01},
        sites=sites,
    )
