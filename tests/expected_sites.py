"""The sites of the tiny models, written out by hand (independent of the registry's patterns).

Per architecture and site: module name with ``{}`` for the layer, layers, width, inert layers and
the kind of positions the module sees.
"""

EXPECTED_SITES = {
    "llava_next": {
        "lm": ("model.language_model.layers.{}.mlp.act_fn", 2, 64, (), "language"),
        "vision": ("model.vision_tower.encoder.layers.{}.mlp.activation_fn", 3, 64, (2,), "vision"),
        "projector": ("model.multi_modal_projector.act", 1, 32, (), "features"),
    },
    "llava": {
        "lm": ("model.language_model.layers.{}.mlp.act_fn", 2, 64, (), "language"),
        "vision": ("model.vision_tower.encoder.layers.{}.mlp.activation_fn", 3, 64, (2,), "vision"),
        "projector": ("model.multi_modal_projector.act", 1, 32, (), "features"),
    },
    "instructblip": {
        "lm": ("language_model.model.layers.{}.mlp.act_fn", 2, 64, (), "language"),
        "vision": ("vision_model.encoder.layers.{}.mlp.activation_fn", 2, 64, (), "vision"),
        "qformer": ("qformer.encoder.layer.{}.intermediate.intermediate_act_fn", 2, 64, (1,), "instruction"),
        "query": ("qformer.encoder.layer.{}.intermediate_query.intermediate_act_fn", 2, 64, (), "query"),
    },
    "qwen2_vl": {
        "lm": ("model.language_model.layers.{}.mlp.act_fn", 2, 64, (), "language"),
        "vision": ("model.visual.blocks.{}.mlp.act", 2, 64, (), "vision"),
        "projector": ("model.visual.merger.mlp.1", 1, 128, (), "features"),
    },
    "idefics3": {
        "lm": ("model.text_model.layers.{}.mlp.act_fn", 2, 64, (), "language"),
        "vision": ("model.vision_model.encoder.layers.{}.mlp.activation_fn", 2, 64, (), "vision"),
    },
    "paligemma": {
        "lm": ("model.language_model.layers.{}.mlp.act_fn", 2, 64, (), "language"),
        "vision": ("model.vision_tower.encoder.layers.{}.mlp.activation_fn", 2, 64, (), "vision"),
    },
}


def module_names(arch: str, site: str) -> list[str]:
    pattern, layers = EXPECTED_SITES[arch][site][:2]
    return [pattern.format(layer) for layer in range(layers)] if "{}" in pattern else [pattern]
