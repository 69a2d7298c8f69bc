"""Which vision-tower and projector positions of LLaVA-NeXT ("anyres") survive unpadding.

Geometry. For an image of (H, W) pixels the processor picks a grid resolution (gh, gw) from
``config.image_grid_pinpoints`` with ``select_best_resolution``, resizes the image into it keeping
the aspect ratio, pads the rest with black (centred) and cuts the result into
``rows x cols = gh/S x gw/S`` tiles of the vision tower's ``image_size`` S. Tile 0 is the whole
image resized to S x S (the *base* tile); tiles 1.. are the grid tiles, row-major. Every tile goes
through CLIP (``1 + p*p`` positions: CLS, then the p x p patches row-major, p = S / patch_size)
and, after the "default" strategy drops CLS, through the projector (``p*p`` positions).

Only then does the model stitch the grid tiles into one ``rows*p x cols*p`` feature map and crop
it (``unpad_image``) to the image's aspect ratio, in patch units: with the current map size
(ch, cw),

- if W/H > cw/ch (wider than the map), ``new = int(round(H * cw / W, 7))`` rows are meant to
  survive, ``pad = (ch - new) // 2`` and rows ``pad .. ch - pad - 1`` are kept;
- otherwise the same for columns with ``new = int(round(W * ch / H, 7))``.

The base tile is never cropped. So the vision tower's and projector's MLPs see patches the
language model never gets; :func:`surviving_patch_masks` marks the ones it does get, reproducing
that arithmetic (it does not call the model's ``unpad_image``). Survival follows the model's crop,
not the processor's pixel padding: a kept border patch may be partly black.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.image_processing_utils import select_best_resolution

from mmneuron.errors import MmneuronError

SUPPORTED_STRATEGY = "default"


class AnyresError(MmneuronError):
    """A LLaVA-NeXT configuration or image size whose surviving patches cannot be computed."""


@dataclass(frozen=True)
class PatchMasks:
    """Flat bool masks, one entry per position in the order the modules see them.

    ``vision``: the CLIP encoder's MLP positions, tile by tile over all images (``1 + p*p`` each);
    ``projector``: the projector's MLP positions (``p*p`` per tile); ``tiles``: tiles run per image
    (base included).
    """

    vision: torch.Tensor
    projector: torch.Tensor
    tiles: tuple[int, ...]

    def padding_share(self, kind: str = "projector") -> float:
        """Share of ``kind``'s positions ("vision" or "projector") cropped away as padding."""
        mask = {"vision": self.vision, "projector": self.projector}[kind]
        return 1.0 - mask.sum().item() / max(mask.numel(), 1)


def _size(image_size) -> tuple[int, int]:
    values = image_size.tolist() if hasattr(image_size, "tolist") else list(image_size)
    if len(values) != 2 or min(values) <= 0:
        raise AnyresError(f"image size {values} is not a positive (height, width) pair")
    return int(values[0]), int(values[1])


def _tile_geometry(config) -> tuple[int, int]:
    """(tile side S in pixels, patches per tile side p)."""
    tile, patch = config.vision_config.image_size, config.vision_config.patch_size
    if tile % patch:
        raise AnyresError(f"vision_config.image_size {tile} is not a multiple of vision_config.patch_size {patch}")
    return tile, tile // patch


def grid_survival(config, image_size) -> torch.Tensor:
    """The stitched grid's survival map for one image of ``image_size`` (H, W) pixels.

    A bool tensor of ``rows*p x cols*p`` patches (grid tiles only, base tile excluded), True where
    the patch is kept by the model's unpadding.
    """
    height, width = _size(image_size)
    tile, p = _tile_geometry(config)
    grid_h, grid_w = select_best_resolution((height, width), config.image_grid_pinpoints)
    if grid_h % tile or grid_w % tile:
        raise AnyresError(
            f"image_grid_pinpoints entry {[grid_h, grid_w]} is not a multiple of vision_config.image_size {tile}"
        )
    current_h, current_w = grid_h // tile * p, grid_w // tile * p
    keep = torch.zeros(current_h, current_w, dtype=torch.bool)
    if width / height > current_w / current_h:
        new = int(round(height * (current_w / width), 7))
        pad = (current_h - new) // 2
        keep[pad : current_h - pad, :] = True
    else:
        new = int(round(width * (current_h / height), 7))
        pad = (current_w - new) // 2
        keep[:, pad : current_w - pad] = True
    return keep


def surviving_patch_masks(config, image_sizes: torch.Tensor | Sequence, strategy: str | None = None) -> PatchMasks:
    """Masks of the vision-tower and projector positions that reach the language model.

    ``config`` is a ``LlavaNextConfig`` (``image_grid_pinpoints``, ``vision_config.image_size`` and
    ``patch_size``, ``vision_feature_select_strategy``); ``image_sizes`` the processor's
    ``image_sizes``, (H, W) per image in batch order; ``strategy`` overrides the config's
    ``vision_feature_select_strategy`` (as a call-time argument to the model would).

    Per image the model runs ``1 + rows*cols`` tiles (the padded tile slots of the 5-D
    ``pixel_values`` are dropped before the vision tower), images concatenated. Base tile: every
    position True. Grid tiles: a patch is True when it survives unpadding (see the module
    docstring). CLS is True in every tile of the ``vision`` mask: it is the tile's summary token,
    computed from all its patches, not a padding position; it never reaches the projector under
    the "default" strategy. Only "default" is supported: "full" keeps CLS in the features, which
    the model's unpadding does not expect.
    """
    strategy = config.vision_feature_select_strategy if strategy is None else strategy
    if strategy != SUPPORTED_STRATEGY:
        raise AnyresError(
            f"vision_feature_select_strategy {strategy!r} is not supported for anyres patch masks; "
            f"only {SUPPORTED_STRATEGY!r} (CLS dropped before the projector) is"
        )
    _, p = _tile_geometry(config)
    sizes = image_sizes.tolist() if isinstance(image_sizes, torch.Tensor) else list(image_sizes)
    vision, projector, tiles = [], [], []
    for image_size in sizes:
        keep = grid_survival(config, image_size)
        rows, cols = keep.shape[0] // p, keep.shape[1] // p
        # (rows*p, cols*p) -> tile-major (rows*cols, p*p), each tile's patches row-major
        grid = keep.reshape(rows, p, cols, p).permute(0, 2, 1, 3).reshape(rows * cols, p * p)
        per_tile = torch.cat([torch.ones(1, p * p, dtype=torch.bool), grid])
        projector.append(per_tile.reshape(-1))
        vision.append(torch.cat([torch.ones(len(per_tile), 1, dtype=torch.bool), per_tile], dim=1).reshape(-1))
        tiles.append(len(per_tile))
    empty = torch.zeros(0, dtype=torch.bool)
    return PatchMasks(
        vision=torch.cat(vision) if vision else empty,
        projector=torch.cat(projector) if projector else empty,
        tiles=tuple(tiles),
    )
