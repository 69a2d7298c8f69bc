"""Activation statistics of a model over samples: one forward pass per prompt, batched, exact.

Every sample becomes the statistics prompt (``prompt_template`` with its question, rewritten for
the architecture's image placeholder) with its image. Batches are padded on the right, so that the
real tokens of a batched prompt keep the positions they have alone (which matters for absolute
position embeddings such as the Q-Former's); padding is masked out of every count. Counts are sums
over positions, so they do not depend on batch size or sharding, and shards merge by summing.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from mmneuron.counts import Counts
from mmneuron.data.samples import Sample, SampleError, decode_image
from mmneuron.hooks.record import ActivationRecorder
from mmneuron.models.sites import ResolvedSite, image_prompt, image_token_id, resolve_sites

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "<image>\n{question}"


class ExtractionError(RuntimeError):
    """Extraction cannot go on (too many bad samples, an unusable prompt or model state)."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (1 <= i <= n) -> ``(i, n)``."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 1 <= int(index) <= int(count):
        raise ValueError(f"a shard is written i/n with 1 <= i <= n (e.g. 2/4), got {text!r}")
    return int(index), int(count)


def shard(items: Sequence, index: int, count: int) -> list:
    """Shard ``index`` of ``count`` (1-based): a contiguous block, ``items[(i-1)*N//n : i*N//n]``.

    The shards of one list are disjoint, cover it in order, and differ in size by at most one;
    shards 1..k of 2k together are exactly shard 1 of 2 (the first half).
    """
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: need 1 <= index <= count")
    size = len(items)
    return list(items[(index - 1) * size // count : index * size // count])


def extract_counts(
    model,
    processor,
    samples: Sequence[Sample],
    prompt_template: str = DEFAULT_PROMPT,
    batch_size: int = 8,
    sites: Sequence[str] | None = None,
    max_bad_share: float = 0.0,
    progress: bool = True,
    model_name: str | None = None,
    domain: str | None = None,
    settings: dict | None = None,
) -> Counts:
    """Count active positions per neuron of ``sites`` (default: all) of ``model`` over ``samples``.

    Samples whose image is missing or corrupt are skipped, logged and listed in the result's
    ``skipped``; more than ``max_bad_share`` of the samples bad is an :class:`ExtractionError`
    (raised as soon as that is certain). ``settings`` are recorded with the extraction's own.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not 0.0 <= max_bad_share <= 1.0:
        raise ValueError(f"max_bad_share must lie in [0, 1], got {max_bad_share}")
    if model.training:
        raise ExtractionError("the model is in training mode (dropout changes activations); call model.eval()")
    domain = _domain(samples, domain)
    resolved = resolve_sites(model, sites)
    model_type = model.config.model_type
    allowed_bad = math.floor(max_bad_share * len(samples) + 1e-9)
    skipped: list[dict] = []
    batch: list[tuple[str, object]] = []
    counted = 0

    bar = tqdm(total=len(samples), desc=f"extract {domain}", unit="sample", disable=not progress)
    with torch.inference_mode(), ActivationRecorder(resolved) as recorder, bar:
        for index, sample in enumerate(samples):
            prompt = _prompt(model_type, prompt_template, sample)
            try:
                batch.append((prompt, decode_image(sample)))
            except SampleError as error:
                skipped.append({"sample_id": sample.sample_id, "reason": str(error)})
                log.warning("skipped: %s", error)
                bar.update(1)
                if len(skipped) > allowed_bad:
                    raise ExtractionError(_too_many_bad(skipped, len(samples), max_bad_share)) from None
            if len(batch) == batch_size or (batch and index == len(samples) - 1):
                _forward(model, processor, recorder, resolved, batch)
                counted += len(batch)
                bar.update(len(batch))
                batch = []
            bar.set_postfix(skipped=len(skipped), refresh=False)
    active, tokens = recorder.results()
    if skipped:
        log.warning("%s: %d of %d samples skipped (bad images)", domain, len(skipped), len(samples))
    return Counts(
        model=model_name or getattr(model, "name_or_path", "") or model_type,
        domain=domain,
        sites={site.name: site.info() for site in resolved},
        active=active,
        tokens=tokens,
        samples=counted,
        skipped=skipped,
        settings={
            "prompt": prompt_template,
            "batch_size": batch_size,
            "sites": [site.name for site in resolved],
            "max_bad_share": max_bad_share,
            "dtype": str(model.dtype).removeprefix("torch."),
            "padding": "right",
            **(settings or {}),
        },
    )


def _domain(samples: Sequence[Sample], domain: str | None) -> str:
    """The one domain of ``samples`` (``domain`` when given: then every sample must belong to it)."""
    domains = sorted({sample.domain for sample in samples})
    if domain is None and len(domains) == 1:
        return domains[0]
    if domain is None or domains not in ([], [domain]):
        expected = f"domain {domain!r}" if domain else "one domain (or pass domain=...)"
        raise ExtractionError(f"samples must come from {expected}, got {domains or 'none'}")
    return domain


def _prompt(model_type: str, template: str, sample: Sample) -> str:
    try:
        return image_prompt(model_type, template.format(question=sample.question))
    except (KeyError, IndexError, ValueError) as error:
        raise ExtractionError(
            f"sample {sample.sample_id}: prompt template {template!r} does not give a prompt "
            f"(it may use only {{question}} and must hold <image> once): {error}"
        ) from None


def _too_many_bad(skipped: list[dict], total: int, max_bad_share: float) -> str:
    listed = "; ".join(f"{entry['sample_id']}: {entry['reason']}" for entry in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return f"{len(skipped)} of {total} samples are bad, more than max_bad_share={max_bad_share}: {listed}{more}"


def prepare_batch(model, processor, prompts: Sequence[str], images: Sequence) -> dict:
    """Processor inputs for one batch, right-padded, on the model's device and in its dtype."""
    inputs = processor(
        images=list(images), text=list(prompts), padding=True, padding_side="right", return_tensors="pt"
    ).to(device=model.device, dtype=model.dtype)
    inputs.pop("labels", None)  # PaliGemma's processor adds them; no loss is wanted
    return inputs


def position_masks(model, inputs, sites: Sequence[ResolvedSite]) -> dict:
    """Per kind of positions, the masks of its parts (vision and query positions all count)."""
    real = inputs["attention_mask"].bool()
    image = inputs["input_ids"] == image_token_id(model)
    masks: dict = {"language": {"image": real & image, "text": real & ~image}, "vision": None, "query": None}
    if any(site.positions == "instruction" for site in sites):
        if "qformer_attention_mask" not in inputs:
            raise ExtractionError("the processor gave no qformer_attention_mask to mask instruction-token padding")
        masks["instruction"] = {"text": inputs["qformer_attention_mask"].bool()}
    return masks


def forward_options(model) -> dict:
    """No cache, and logits for the last position only: the statistics need neither."""
    accepted = inspect.signature(model.forward).parameters
    return {name: value for name, value in (("use_cache", False), ("logits_to_keep", 1)) if name in accepted}


def _forward(model, processor, recorder: ActivationRecorder, sites: list[ResolvedSite], batch) -> None:
    prompts, images = zip(*batch)
    inputs = prepare_batch(model, processor, prompts, images)
    recorder.set_masks(position_masks(model, inputs, sites))
    model(**inputs, **forward_options(model))
