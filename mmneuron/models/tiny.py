"""Tiny, randomly initialised vision-language models with working processors, built offline.

Each builder mirrors the real architecture (module names, activation modules, special tokens,
image-token bookkeeping) at toy size, so that hooks, extraction and the workflow can be tested
on CPU in seconds without downloading anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    BlipImageProcessorPil,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GemmaConfig,
    GenerationConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig, Qwen2VLVisionConfig

from mmneuron.models import sites
from mmneuron.models.processors import Qwen2VLImageOnlyProcessor
from mmneuron.models.tokenizer import build_bert_style_tokenizer, build_word_tokenizer

IMAGE = sites.IMAGE

# Shared toy sizes: 32-px tiles cut into 8-px patches (16 patches per tile).
HIDDEN, INTERMEDIATE, HEADS, LAYERS = 32, 64, 4, 2
TILE, PATCH = 32, 8

# Enough everyday words for readable prompts and answers (the word tokenizer is case-sensitive);
# anything else becomes <unk>.
WORDS = """
a an the this that these it is are was be what which who where when how many much why does do
What Which Who Where When How Why Is Are Does Do Question Answer USER ASSISTANT A B C D
there of in on at to for with from and or not no yes image picture photo scene shows show
colour color red green blue yellow white black gray grey orange purple brown
car road truck bus person people man woman dog cat tree building house field water river
sign light left right top bottom front behind number one two three four five count
question answer describe kind type shape size small large big option letter choices
document text title page medical scan ct mri organ area residential rural urban
single word phrase using given directly
? . , : ; ! ' ( ) -
""".split()


def _seeded(model_cls: type[PreTrainedModel], config, seed: int) -> PreTrainedModel:
    """Instantiate with weights drawn from ``seed`` without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


def _lm_tokenizer(extra_special_tokens=(IMAGE,), add_bos: bool = True) -> PreTrainedTokenizerFast:
    return build_word_tokenizer(
        WORDS, extra_special_tokens=extra_special_tokens, padding_side="left", add_bos_token=add_bos
    )


def _token_ids(tokenizer) -> dict[str, int]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _llama(tokenizer, **overrides) -> LlamaConfig:
    """A LLaMA text config (SiLU-gated MLP, ``mlp.act_fn``) sized for ``tokenizer``."""
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS // 2,
        max_position_embeddings=512,
        **_token_ids(tokenizer),
    )
    return LlamaConfig(**{**settings, **overrides})


def _finish(model: PreTrainedModel, tokenizer) -> PreTrainedModel:
    """Greedy decoding by default, with the tokenizer's special ids."""
    model.generation_config = GenerationConfig(do_sample=False, **_token_ids(tokenizer))
    return model


def _clip_vision() -> CLIPVisionConfig:
    # 3 layers: LLaVA reads layer -2, so the last one is inert (as in the 7B models)
    return CLIPVisionConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        projection_dim=HIDDEN,
        num_hidden_layers=3,
        num_attention_heads=HEADS,
        image_size=TILE,
        patch_size=PATCH,
    )


def _build_llava(seed: int):
    tokenizer = _lm_tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped again by the "default" strategy
    )
    config = LlavaConfig(
        vision_config=_clip_vision(),
        text_config=_llama(tokenizer),
        image_token_index=processor.image_token_id,
        image_seq_length=(TILE // PATCH) ** 2,
    )
    return _finish(_seeded(LlavaForConditionalGeneration, config, seed), tokenizer), processor


def _build_llava_next(seed: int):
    tokenizer = _lm_tokenizer()
    pinpoints = [[TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaNextConfig(
        vision_config=_clip_vision(),
        text_config=_llama(tokenizer),
        image_token_index=processor.image_token_id,
        image_grid_pinpoints=pinpoints,
        image_seq_length=(TILE // PATCH) ** 2,
    )
    return _finish(_seeded(LlavaNextForConditionalGeneration, config, seed), tokenizer), processor


def _build_instructblip(seed: int):
    tokenizer = _lm_tokenizer()
    qformer_tokenizer = build_bert_style_tokenizer(WORDS)
    num_query_tokens = 4
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": TILE, "width": TILE}),
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=num_query_tokens,
    )
    vision = InstructBlipVisionConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        image_size=TILE,
        patch_size=PATCH,
        initializer_range=0.02,  # the default (1e-10) would leave a random model's vision tower silent
    )
    qformer = InstructBlipQFormerConfig(
        vocab_size=len(qformer_tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=64,
        encoder_hidden_size=HIDDEN,
        pad_token_id=qformer_tokenizer.pad_token_id,
    )
    config = InstructBlipConfig(
        vision_config=vision,
        qformer_config=qformer,
        text_config=_llama(tokenizer),
        num_query_tokens=num_query_tokens,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
    )
    return _finish(_seeded(InstructBlipForConditionalGeneration, config, seed), tokenizer), processor


def _build_qwen2_vl(seed: int):
    specials = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>")
    tokenizer = _lm_tokenizer(specials, add_bos=False)  # Qwen adds no BOS
    merge = 2
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": TILE * TILE, "longest_edge": 4 * TILE * TILE},
        patch_size=PATCH,
        merge_size=merge,
        temporal_patch_size=2,
    )
    processor = Qwen2VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vision = Qwen2VLVisionConfig(
        depth=LAYERS,
        embed_dim=HIDDEN,
        hidden_size=HIDDEN,  # the merger projects to the LM's width
        mlp_ratio=2,
        num_heads=HEADS,
        patch_size=PATCH,
        spatial_merge_size=merge,
        temporal_patch_size=2,
    )
    text = Qwen2VLTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS // 2,
        max_position_embeddings=512,
        # M-RoPE splits head_dim / 2 = 4 rotary frequencies over (time, height, width)
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
        **_token_ids(tokenizer),
    )
    vision_start, image, vision_end, video = tokenizer.convert_tokens_to_ids(list(specials))
    config = Qwen2VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=vision_start,
        vision_end_token_id=vision_end,
    )
    return _finish(_seeded(Qwen2VLForConditionalGeneration, config, seed), tokenizer), processor


def _build_idefics3(seed: int):
    grid = [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]
    specials = ("<fake_token_around_image>", IMAGE, "<end_of_utterance>", "<global-img>", *grid)
    tokenizer = _lm_tokenizer(specials)
    scale_factor = 2
    image_seq_len = (TILE // PATCH) ** 2 // scale_factor**2
    # Images up to 2x2 tiles of TILE px, plus the downscaled global view.
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 2 * TILE}, max_image_size={"longest_edge": TILE})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_seq_len)
    vision = Idefics3VisionConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        image_size=TILE,
        patch_size=PATCH,
    )
    config = Idefics3Config(
        vision_config=vision,
        text_config=_llama(tokenizer, rms_norm_eps=1e-5),
        image_token_id=processor.image_token_id,
        scale_factor=scale_factor,
    )
    return _finish(_seeded(Idefics3ForConditionalGeneration, config, seed), tokenizer), processor


def _build_paligemma(seed: int):
    tokenizer = _lm_tokenizer(add_bos=False)  # the processor places BOS itself
    image_seq_length = (TILE // PATCH) ** 2
    image_processor = SiglipImageProcessorPil(size={"height": TILE, "width": TILE}, image_seq_length=image_seq_length)
    # The processor adds PaliGemma's 1152 <locXXXX>/<segXXX> tokens, so size the vocab afterwards.
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vision = SiglipVisionConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        image_size=TILE,
        patch_size=PATCH,
        vision_use_head=False,
    )
    text = GemmaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=1,
        head_dim=HIDDEN // HEADS,
        max_position_embeddings=512,
        **_token_ids(tokenizer),
    )
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=processor.image_token_id,
        vocab_size=len(tokenizer),
        projection_dim=HIDDEN,
        hidden_size=HIDDEN,
    )
    return _finish(_seeded(PaliGemmaForConditionalGeneration, config, seed), tokenizer), processor


_BUILDERS: dict[str, Callable[[int], tuple[PreTrainedModel, ProcessorMixin]]] = {
    "llava_next": _build_llava_next,
    "llava": _build_llava,
    "instructblip": _build_instructblip,
    "qwen2_vl": _build_qwen2_vl,
    "idefics3": _build_idefics3,
    "paligemma": _build_paligemma,
}
TINY_ARCHITECTURES: tuple[str, ...] = tuple(_BUILDERS)


def _check_arch(arch: str) -> None:
    if arch not in _BUILDERS:
        raise ValueError(f"unknown tiny architecture {arch!r}; known: {', '.join(TINY_ARCHITECTURES)}")


def build_tiny(arch: str, seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A tiny random ``arch`` model (eval mode, greedy generation) and its processor."""
    _check_arch(arch)
    return _BUILDERS[arch](seed)


def save_tiny(arch: str, path, seed: int = 0) -> Path:
    """Save a tiny model and its processor into one folder, loadable with ``from_pretrained``."""
    model, processor = build_tiny(arch, seed)
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def image_prompt(arch: str, text: str) -> str:
    """Rewrite ``text``, holding the placeholder ``<image>`` once, into ``arch``'s processor prompt."""
    _check_arch(arch)
    return sites.image_prompt(arch, text)
