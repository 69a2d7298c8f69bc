"""Anyres patch masks against LLaVA-NeXT's own tiling, unpadding and forward.

Every expected set comes from the model: its tile count (``image_size_to_num_patches``), its
unpadding (``pack_image_features``), the shapes its MLPs see in a real forward, and the image
rows that actually reach the language model.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import model_tiles, packed_indices
from PIL import Image
from transformers import CLIPVisionConfig, LlavaNextConfig

from mmneuron.data import synthetic
from mmneuron.errors import MmneuronError
from mmneuron.models.anyres import AnyresError, surviving_patch_masks
from mmneuron.models.demo import build_demo_model, build_demo_processor
from mmneuron.models.sites import resolve_sites
from mmneuron.models.tiny import build_tiny

# (width, height) in pixels
WIDE = [(200, 40), (320, 64), (161, 32)]  # 5:1 strips, as LingoQA's five frames side by side
TALL = [(40, 120), (30, 97)]
OFF_SQUARE = [(66, 64), (64, 61), (70, 64)]
SQUARE = [(64, 64), (50, 50)]
TINY = [(7, 5), (3, 1), (1, 9)]
SIZES = WIDE + TALL + OFF_SQUARE + SQUARE + TINY
MIXED = [(200, 40), (40, 120), (66, 64), (64, 64), (7, 5)]
# llava-v1.6 7B geometry
PINPOINTS_7B = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def _image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(1, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=["tiny", "demo"])
def llava(request):
    if request.param == "tiny":
        model, processor = build_tiny("llava_next")
    else:
        processor = build_demo_processor(synthetic.vocabulary())
        model = build_demo_model(processor).eval()
    return model, processor


def _inputs(processor, sizes):
    images = [_image(size, seed) for seed, size in enumerate(sizes)]
    prompts = ["<image>\nWhat is this ?"] * len(images)
    return processor(images=images, text=prompts, return_tensors="pt", padding=True)


def _check_against_unpadding(config, image_sizes) -> None:
    masks = surviving_patch_masks(config, image_sizes)
    survivors, positions = packed_indices(config, image_sizes)
    assert len(survivors) == len(set(survivors)), "a position came out of the unpadding twice"
    assert masks.projector.dtype == torch.bool
    assert masks.projector.numel() == positions
    assert set(masks.projector.nonzero().reshape(-1).tolist()) == set(survivors)
    assert list(masks.tiles) == model_tiles(config, image_sizes)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_projector_mask_is_what_survives_the_models_unpadding(llava, size):
    model, processor = llava
    inputs = _inputs(processor, [size])
    assert inputs["image_sizes"].tolist() == [[size[1], size[0]]]
    _check_against_unpadding(model.config, inputs["image_sizes"])


def test_mixed_batch_of_aspect_ratios_matches_the_unpadding(llava):
    model, processor = llava
    inputs = _inputs(processor, MIXED)
    _check_against_unpadding(model.config, inputs["image_sizes"])


def test_wide_strip_loses_grid_patches(llava):
    model, processor = llava
    inputs = _inputs(processor, [WIDE[0]])
    survivors, positions = packed_indices(model.config, inputs["image_sizes"])
    masks = surviving_patch_masks(model.config, inputs["image_sizes"])
    assert len(survivors) < positions, "a 5:1 strip in a 1:2 grid must leave padding behind"
    assert masks.padding_share() == pytest.approx(1 - len(survivors) / positions)


def test_masks_fit_the_mlp_positions_of_a_real_forward(llava):
    model, processor = llava
    inputs = _inputs(processor, MIXED)
    assert inputs["pixel_values"].dim() == 5  # padded tile slots the model drops before the tower
    # the modules the recorder hooks: every vision layer's activation and the projector's
    sites = {site.name: site for site in resolve_sites(model, ["vision", "projector"])}
    vision_act, projector_act = sites["vision"].modules[0], sites["projector"].modules[0]
    shapes: dict[str, torch.Size] = {}

    def shape_of(name):
        def hook(module, args, output):
            assert name not in shapes, "the module ran more than once"
            shapes[name] = output.shape

        return hook

    hooks = [
        vision_act.register_forward_hook(shape_of("vision")),
        projector_act.register_forward_hook(shape_of("projector")),
    ]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    masks = surviving_patch_masks(model.config, inputs["image_sizes"])
    assert masks.vision.numel() == shapes["vision"][:-1].numel()
    assert masks.projector.numel() == shapes["projector"][:-1].numel()
    assert shapes["vision"][0] == sum(masks.tiles) < inputs["pixel_values"].shape[:2].numel()
    # vision = projector with a True CLS in front of every tile
    per_tile = masks.vision.reshape(sum(masks.tiles), -1)
    assert per_tile[:, 0].all()
    assert torch.equal(per_tile[:, 1:].reshape(-1), masks.projector)


def test_surviving_projector_rows_are_the_ones_the_language_model_gets(llava):
    """End to end: the projector outputs at True positions are exactly the image rows of the LM input."""
    model, processor = llava
    inputs = _inputs(processor, MIXED)
    captured = {}

    def projector_output(module, args, output):
        captured["projector"] = output.detach().reshape(-1, output.shape[-1])

    def lm_input(module, args, kwargs):
        captured["embeds"] = kwargs["inputs_embeds"].detach()

    hooks = [
        model.model.multi_modal_projector.register_forward_hook(projector_output),
        model.model.language_model.register_forward_pre_hook(lm_input, with_kwargs=True),
    ]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    image_rows = captured["embeds"][inputs["input_ids"] == model.config.image_token_id]
    newline = model.model.image_newline.detach()
    image_rows = image_rows[~(image_rows == newline).all(-1)]
    projector = captured["projector"]
    # match each LM image row to the projector row it equals (random features: unique)
    equal = (image_rows[:, None, :] == projector[None, :, :]).all(-1)
    assert (equal.sum(1) == 1).all(), "every image row of the LM input is one projector row"
    reached = set(equal.float().argmax(1).tolist())
    masks = surviving_patch_masks(model.config, inputs["image_sizes"])
    assert len(reached) == len(image_rows)
    assert set(masks.projector.nonzero().reshape(-1).tolist()) == reached


def _config_7b(**overrides) -> LlavaNextConfig:
    return LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=336, patch_size=14), image_grid_pinpoints=PINPOINTS_7B, **overrides
    )


@pytest.mark.parametrize("hw", [(336, 1680), (1080, 9600), (480, 640), (1000, 300), (671, 673), (20, 10)])
def test_7b_geometry_matches_the_models_unpadding(hw):
    _check_against_unpadding(_config_7b(), [hw])


def test_7b_mixed_batch_matches_the_models_unpadding():
    _check_against_unpadding(_config_7b(), [(336, 1680), (1008, 336), (480, 640), (672, 672)])


@pytest.fixture(scope="module")
def llava_configs():
    tiny = build_tiny("llava_next")[0].config
    demo = build_demo_model(build_demo_processor(synthetic.vocabulary())).config
    return {"tiny": tiny, "demo": demo}


@pytest.mark.parametrize(
    ("model_name", "hw"), [("tiny", (64, 64)), ("tiny", (32, 64)), ("tiny", (64, 32)), ("demo", (32, 32))]
)
def test_image_of_a_pinpoint_size_has_no_padding(llava_configs, model_name, hw):
    config = llava_configs[model_name]
    masks = surviving_patch_masks(config, [hw])
    survivors, positions = packed_indices(config, [hw])
    assert len(survivors) == positions, "the model keeps every position"
    assert masks.projector.all() and masks.vision.all()
    assert masks.padding_share() == 0.0


@pytest.mark.parametrize("hw", [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)])
def test_7b_pinpoint_sizes_have_no_padding(hw):
    config = _config_7b()
    survivors, positions = packed_indices(config, [hw])
    assert len(survivors) == positions
    assert surviving_patch_masks(config, [hw]).projector.all()


def test_full_strategy_is_refused_naming_the_setting():
    config = _config_7b(vision_feature_select_strategy="full")
    with pytest.raises(AnyresError, match=r"vision_feature_select_strategy 'full'") as raised:
        surviving_patch_masks(config, [(336, 672)])
    assert isinstance(raised.value, MmneuronError)
    with pytest.raises(AnyresError, match="vision_feature_select_strategy"):
        surviving_patch_masks(_config_7b(), [(336, 672)], strategy="full")


def test_image_sizes_as_tensor_or_pairs_agree():
    config = _config_7b()
    sizes = [(336, 1680), (480, 640)]
    from_tensor = surviving_patch_masks(config, torch.tensor(sizes))
    from_pairs = surviving_patch_masks(config, sizes)
    assert torch.equal(from_tensor.vision, from_pairs.vision)
    assert torch.equal(from_tensor.projector, from_pairs.projector)


def test_bad_geometry_is_a_user_error():
    config = copy.deepcopy(_config_7b())
    config.image_grid_pinpoints = [[336, 700]]
    with pytest.raises(AnyresError, match="image_grid_pinpoints"):
        surviving_patch_masks(config, [(336, 700)])
    with pytest.raises(AnyresError, match="height, width"):
        surviving_patch_masks(_config_7b(), [(0, 10)])
