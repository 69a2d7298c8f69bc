"""The one input path: samples -> prompts -> model inputs, for every stage that runs a model.

Extraction, generation, answer log-likelihood, the logit lens, the perturbation and the demo
model's training all turn samples into inputs here, so an architecture's quirks are handled once:

- **Prompts** (:func:`build_prompt`): a template with ``{question}``, ``{options}`` and the
  sample's meta fields, then either one user turn of the processor's chat template or the
  architecture's own image placeholder (``mmneuron.models.sites``).
- **Batches** (:func:`encode`): the processor's encoding with the padding side passed as an
  argument (the shared tokenizer is never changed); InstructBLIP's Q-Former instruction always
  padded on the right (BERT's absolute positions must not move with the batch) and always the
  prompt alone; position ids wherever padding precedes real tokens (left padding, and
  InstructBLIP's padding between its query tokens and the text); PaliGemma's labels dropped; a
  scored answer appended as the model would write it, or as PaliGemma's causal suffix.
- **Positions** (:func:`position_masks`, :func:`scope_masks`): which token positions each kind of
  site sees and counts, per scope; LLaVA-NeXT's tile padding, which ``unpad_image`` removes before
  the language model, is left out of the vision tower's and projector's counts unless asked for.
- **Forward options** (:func:`forward_options`): no cache and only the logits a stage needs.

Padding sides: stages that do not generate pad on the right, so real tokens keep the positions
they have alone; generation and the log-likelihood pad on the left (answers end every row).
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import BatchFeature

from mmneuron.data.samples import Sample, decode_images
from mmneuron.defaults import ANYRES_PADDING, SCOPES
from mmneuron.errors import MmneuronError
from mmneuron.models import anyres
from mmneuron.models.sites import IMAGE, ResolvedSite, architecture, image_prompt, image_token_id

LEFT, RIGHT = "left", "right"
SKIP, COUNT = ANYRES_PADDING


class InputError(MmneuronError):
    """A sample, prompt or answer that cannot become model inputs; the message names it."""


# --- prompts ---------------------------------------------------------------------------------


def format_options(options) -> str:
    """Multiple-choice options as prompt lines: ``A. text`` (a list takes the letters in order)."""
    if isinstance(options, dict):
        return "\n".join(f"{key}. {text}" for key, text in options.items())
    return "\n".join(f"{letter}. {text}" for letter, text in zip(string.ascii_uppercase, options))


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def check_template(template: str) -> None:
    """A prompt template must ask the question and may hold the image placeholder at most once."""
    if "question" not in template_fields(template):
        raise InputError(f"the prompt template needs a {{question}} field: {template!r}")
    if template.count(IMAGE) > 1:
        raise InputError(f"the prompt template holds {IMAGE!r} more than once: {template!r}")


def user_turn(processor, text: str) -> str:
    """``text`` as one user turn with an image, in the processor's chat template, ready for an answer."""
    if not getattr(processor, "chat_template", None):
        raise InputError(f"{type(processor).__name__} has no chat template; use a prompt without chat")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def build_prompt(processor, model_type: str, template: str, sample, chat: bool = False) -> str:
    """The sample's prompt: ``template`` filled with the question, the options (``{options}``) and
    the sample's scalar meta fields; then one user turn of the chat template (``chat``) or the
    architecture's image prompt (an image placeholder first when the template has none)."""
    fields = {key: value for key, value in sample.meta.items() if isinstance(value, (str, int, float))}
    if "options" in sample.meta:
        fields["options"] = format_options(sample.meta["options"])
    try:
        text = template.format(**{**fields, "question": sample.question})
    except (KeyError, IndexError, ValueError) as error:
        raise InputError(
            f"sample {sample.sample_id} ({sample.domain}): the prompt template {template!r} cannot be filled "
            f"({type(error).__name__}: {error}); it may use {{question}}, {{options}} and the sample's meta fields"
        ) from None
    if chat:
        return user_turn(processor, text.replace(IMAGE, "").strip())
    return image_prompt(model_type, text if IMAGE in text else f"{IMAGE}\n{text}")


# --- answers ---------------------------------------------------------------------------------


def with_answer(prompt: str, answer: str) -> str:
    """The answer after its prompt as the model would write it: after one space, unless the prompt
    ends in whitespace."""
    return prompt + answer.strip() if prompt[-1:].isspace() else f"{prompt} {answer.strip()}"


def answer_token_ids(tokenizer, prompt: str, answer: str) -> list[int]:
    """The tokens ``answer`` adds after ``prompt``. The prompt's tokens must stay a prefix of the
    tokens of prompt + answer (true for word-level and SentencePiece/BPE tokenizers when the answer
    starts a new word); otherwise the answer cannot be scored and :class:`InputError` says so."""
    before = tokenizer(prompt)["input_ids"]
    after = tokenizer(with_answer(prompt, answer))["input_ids"]
    if after[: len(before)] != before or len(after) == len(before):
        raise InputError(
            f"the tokens of {answer!r} cannot be separated from the prompt's (prompt ends {prompt[-30:]!r})"
        )
    return after[len(before) :]


# --- batches ---------------------------------------------------------------------------------


@dataclass
class Batch:
    """Model inputs of one batch (``model(**batch.inputs)``), on the model's device.

    ``answer_mask`` (batch x sequence, bool) marks the scored answer's tokens when answers were
    given: the logits at position t - 1 predict the token at t.
    """

    inputs: BatchFeature
    answer_mask: torch.Tensor | None = None


def position_ids(attention_mask: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Positions counted over real tokens only, from ``first`` (as ``generate`` computes them)."""
    positions = attention_mask.long().cumsum(-1) - 1 + first
    return positions.masked_fill(attention_mask == 0, first)


def padding_precedes_tokens(attention_mask: torch.Tensor) -> bool:
    return bool((attention_mask.cummax(1).values > attention_mask).any())


def encode(
    model,
    processor,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    padding_side: str,
    answers: Sequence[str] | None = None,
) -> Batch:
    """One batch of (image, prompt) pairs, padded on ``padding_side``, on the model's device with
    floating tensors in its dtype; with ``answers``, each answer follows its prompt for scoring."""
    if padding_side not in (LEFT, RIGHT):
        raise ValueError(f"padding_side must be {LEFT!r} or {RIGHT!r}, got {padding_side!r}")
    if len(images) != len(prompts) or (answers is not None and len(answers) != len(prompts)):
        raise ValueError(f"{len(images)} images, {len(prompts)} prompts and {len(answers or [])} answers")
    arch = architecture(model.config.model_type)
    texts, extra = list(prompts), {}
    if answers is not None and arch.answer_as_suffix:
        extra["suffix"] = [answer.strip() for answer in answers]
    elif answers is not None:
        texts = [with_answer(prompt, answer) for prompt, answer in zip(prompts, answers)]
    inputs = processor(
        images=list(images), text=texts, padding=True, padding_side=padding_side, return_tensors="pt", **extra
    )
    labels = inputs.pop("labels", None)  # PaliGemma's processor adds labels; no stage wants its loss
    if "qformer_input_ids" in inputs:
        # the Q-Former reads the prompt alone, right-padded, whatever the language model gets
        qformer = processor.qformer_tokenizer(list(prompts), padding=True, padding_side=RIGHT, return_tensors="pt")
        inputs["qformer_input_ids"] = qformer["input_ids"]
        inputs["qformer_attention_mask"] = qformer["attention_mask"]
    mask = inputs["attention_mask"]
    if arch.first_position is not None and padding_precedes_tokens(mask):
        inputs["position_ids"] = position_ids(mask, arch.first_position)
    answer_mask = None
    if answers is not None:
        answer_mask = _answer_mask(processor, prompts, answers, mask, labels, arch.answer_as_suffix)
    inputs = inputs.to(model.device).to(model.dtype)  # .to(dtype) casts only the floating tensors (pixels)
    return Batch(inputs, None if answer_mask is None else answer_mask.to(model.device))


def domain_batches(
    model,
    processor,
    samples: Iterable[Sample],
    prompt_of: Callable[[Sample], str],
    batch_size: int,
    padding_side: str = RIGHT,
    desc: str = "",
    progress: bool = True,
) -> Iterator[tuple[str, list[Sample], Batch, list[dict]]]:
    """``(domain, samples, batch, skipped)`` per batch of ``samples`` grouped by domain (sorted;
    batches never mix domains), prompts from ``prompt_of``. Samples whose image is missing or corrupt
    are left out of their batch and returned in ``skipped`` ({sample_id, domain, reason}) for the
    caller to count and report; a batch left with no sample is not encoded (``batch`` is None)."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    by_domain: dict[str, list[Sample]] = {}
    for sample in samples:
        by_domain.setdefault(sample.domain, []).append(sample)
    for domain, group in sorted(by_domain.items()):
        starts = range(0, len(group), batch_size)
        for start in tqdm(starts, desc=f"{desc} {domain}".strip(), unit="batch", disable=not progress):
            kept, images, skipped = decode_images(group[start : start + batch_size])
            prompts = [prompt_of(sample) for sample in kept]
            batch = encode(model, processor, images, prompts, padding_side) if kept else None
            yield domain, kept, batch, skipped


def _answer_mask(processor, prompts, answers, attention_mask, labels, as_suffix: bool) -> torch.Tensor:
    """The answer's positions: PaliGemma's labelled suffix without its closing end-of-sequence
    token, or else the last real tokens of each row, as many as the answer adds to the prompt."""
    real = attention_mask.bool()
    if as_suffix:
        last_real = real.long().cumsum(1) == real.sum(1, keepdim=True)  # and any padding after it
        return (labels != -100) & real & ~last_real
    mask = torch.zeros_like(real)
    for row, (prompt, answer) in enumerate(zip(prompts, answers)):
        count = len(answer_token_ids(processor.tokenizer, prompt, answer))
        positions = real[row].nonzero().flatten()
        mask[row, positions[-count:]] = True
    return mask


def forward_options(model, logits_to_keep: int = 1) -> dict:
    """No cache, and logits for the last ``logits_to_keep`` positions only (0: all), where the
    model's forward takes these arguments (InstructBLIP's computes every position's logits)."""
    accepted = inspect.signature(model.forward).parameters
    wanted = {"use_cache": False, "logits_to_keep": logits_to_keep}
    return {name: value for name, value in wanted.items() if name in accepted}


# --- positions -------------------------------------------------------------------------------


def with_all_scope(by_scope: Mapping) -> dict:
    """Per-scope additive statistics (anything with ``merge``) in scope order (all, image, text),
    with ``all`` = image merged with text where it was not given directly."""
    every, image, text = SCOPES
    scopes = dict(by_scope)
    if every not in scopes and image in scopes and text in scopes:
        scopes[every] = scopes[image].merge(scopes[text])
    return dict(
        sorted(scopes.items(), key=lambda item: (SCOPES.index(item[0]) if item[0] in SCOPES else len(SCOPES), item[0]))
    )


def scope_masks(model, inputs: Mapping) -> dict[str, torch.Tensor]:
    """The language model's image and text positions (batch x sequence, bool); padding is in neither."""
    real = inputs["attention_mask"].bool()
    image = (inputs["input_ids"] == image_token_id(model)) & real
    return {"image": image, "text": real & ~image}


def position_masks(model, inputs: Mapping, sites: Sequence[ResolvedSite], anyres_padding: str = SKIP) -> dict:
    """Per kind of positions (``mmneuron.models.sites.POSITIONS``), the masks of its parts for
    :meth:`~mmneuron.hooks.record.ActivationRecorder.set_masks`; ``None`` counts every position."""
    if anyres_padding not in ANYRES_PADDING:
        raise InputError(f"anyres_padding must be one of {ANYRES_PADDING}, got {anyres_padding!r}")
    scopes = scope_masks(model, inputs)
    masks: dict = {"language": scopes, "vision": None, "features": None, "query": None}
    if any(site.positions == "instruction" for site in sites):
        if "qformer_attention_mask" not in inputs:
            raise InputError("the processor gave no qformer_attention_mask to mask instruction-token padding")
        masks["instruction"] = {"text": inputs["qformer_attention_mask"].bool()}
    if anyres_padding == SKIP and model.config.model_type == "llava_next":
        kept = anyres.surviving_patch_masks(model.config, inputs["image_sizes"])
        masks["vision"] = {"image": kept.vision.to(inputs["input_ids"].device)}
        masks["features"] = {"image": kept.projector.to(inputs["input_ids"].device)}
    return masks
