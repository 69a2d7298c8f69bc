"""Builders shared by the test modules."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from transformers.models.llava_next.modeling_llava_next import LlavaNextModel, image_size_to_num_patches

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


class DecoderCapture:
    """Per forward of ``model`` while open: the language model's attention mask and every decoder
    layer's output (the residual stream), to compare a sample's states across batches."""

    def __init__(self, model):
        self.model, self.forwards = model, []

    def __enter__(self):
        layers = model_layers(self.model)
        self.handles = [self.model.register_forward_pre_hook(self._start, with_kwargs=True)]
        self.handles += [layer.register_forward_hook(self._layer) for layer in layers]
        return self

    def __exit__(self, *exc_info):
        for handle in self.handles:
            handle.remove()

    def _start(self, module, args, kwargs):
        self.forwards.append((kwargs["attention_mask"].bool(), []))

    def _layer(self, module, args, output):
        self.forwards[-1][1].append((output[0] if isinstance(output, tuple) else output).detach().clone())

    def rows(self):
        """Each batch row's states at its real positions: a list (per forward and row) of per-layer tensors."""
        return [
            [hidden[row][mask[row]] for hidden in layers] for mask, layers in self.forwards for row in range(len(mask))
        ]


def model_layers(model):
    return model.get_decoder().layers


def assert_batch_invariant(one: DecoderCapture, batched: DecoderCapture, order: list[int], atol=1e-5):
    """Every forward of single-sample batches (``one``) equals the matching row of the batched
    forwards; ``order`` maps batched rows (forward-major) to the single runs."""
    singles, rows = one.rows(), batched.rows()
    assert len(rows) == len(order) and len(singles) == len(order)
    for row, single in zip(rows, (singles[i] for i in order)):
        for layer, (a, b) in enumerate(zip(row, single)):
            assert a.shape == b.shape, f"layer {layer}: {tuple(a.shape)} vs {tuple(b.shape)}"
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-4, msg=lambda m, layer=layer: f"layer {layer}: {m}")


# --- LLaVA-NeXT tiles, by the model's own code ------------------------------------------------


def model_tiles(config, image_sizes) -> list[int]:
    """Tiles the model runs per image, by its own count."""
    return [
        image_size_to_num_patches(size, config.image_grid_pinpoints, config.vision_config.image_size)
        for size in image_sizes
    ]


def packed_indices(config, image_sizes) -> tuple[list[int], int]:
    """Feed index-coded projector features (value = flat position) through the model's unpadding.

    Returns the indices that come out (image_newline entries, coded -1, left out) and the number
    of projector positions.
    """
    per_tile = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    tiles = model_tiles(config, image_sizes)
    flat = torch.arange(sum(tiles) * per_tile, dtype=torch.float64).reshape(sum(tiles), per_tile, 1)
    features = list(torch.split(flat, tiles, dim=0))
    packed, lengths = LlavaNextModel.pack_image_features(
        SimpleNamespace(config=config),
        features,
        torch.as_tensor(image_sizes),
        vision_feature_select_strategy="default",
        image_newline=torch.tensor([-1.0], dtype=torch.float64),
    )
    values = torch.cat(packed).reshape(-1)
    assert values.numel() == int(lengths.sum())
    return [int(v) for v in values.tolist() if v != -1], flat.numel()
