"""Activation statistics of a model over samples: one forward pass per prompt, batched, exact.

Every sample becomes the statistics prompt (``prompt_template`` filled in and rewritten for the
architecture's image placeholder, no chat template) with its image, through the one input path
(``mmneuron.models.inputs``): batches padded on the right, so that the real tokens of a batched
prompt keep the positions they have alone; padding is masked out of every count, and so is
LLaVA-NeXT's tile padding unless ``anyres_padding="count"``. Counts and activation moments are sums
(maxima) over positions, so they do not depend on batch size or sharding, and shards merge by
summing (taking the maximum).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from mmneuron.counts import Counts
from mmneuron.data.samples import Sample, SampleError, decode_image, too_many_bad
from mmneuron.defaults import EXTRACTION
from mmneuron.errors import MmneuronError
from mmneuron.hooks.record import ActivationRecorder
from mmneuron.models.inputs import RIGHT, build_prompt, check_template, encode, forward_options, position_masks
from mmneuron.models.sites import ResolvedSite, resolve_sites
from mmneuron.models.tokenizer import unknown_positions

log = logging.getLogger(__name__)


class ExtractionError(MmneuronError):
    """Extraction cannot go on (too many bad samples, an unusable prompt or model state)."""


def extract_counts(
    model,
    processor,
    samples: Sequence[Sample],
    prompt_template: str = EXTRACTION.prompt,
    batch_size: int = EXTRACTION.batch_size,
    sites: Sequence[str] | None = None,
    max_bad_share: float = EXTRACTION.max_bad_share,
    anyres_padding: str = EXTRACTION.anyres_padding,
    progress: bool = True,
    model_name: str | None = None,
    domain: str | None = None,
    settings: dict | None = None,
) -> Counts:
    """Count active positions per neuron of ``sites`` (default: all) of ``model`` over ``samples``.

    Samples whose image is missing or corrupt are skipped, logged and listed in the result's
    ``skipped``; more than ``max_bad_share`` of the samples bad is an :class:`ExtractionError`
    (raised as soon as that is certain). ``settings`` are recorded with the extraction's own, and
    with the number of prompt positions the tokenizer could only read as its unknown token.
    """
    if batch_size < 1:
        raise ExtractionError(f"batch_size must be at least 1, got {batch_size}")
    if not 0.0 <= max_bad_share <= 1.0:
        raise ExtractionError(f"max_bad_share must lie in [0, 1], got {max_bad_share}")
    check_template(prompt_template)
    if model.training:
        raise ExtractionError("the model is in training mode (dropout changes activations); call model.eval()")
    domain = _domain(samples, domain)
    resolved = resolve_sites(model, sites)
    model_type = model.config.model_type
    allowed_bad = math.floor(max_bad_share * len(samples) + 1e-9)
    skipped: list[dict] = []
    batch: list[tuple[str, object]] = []
    counted = 0
    unknown = 0  # prompt positions holding the tokenizer's unknown token

    bar = tqdm(total=len(samples), desc=f"extract {domain}", unit="sample", disable=not progress)
    with torch.inference_mode(), ActivationRecorder(resolved) as recorder, bar:
        for index, sample in enumerate(samples):
            prompt = build_prompt(processor, model_type, prompt_template, sample)
            try:
                batch.append((prompt, decode_image(sample)))
            except SampleError as error:
                skipped.append({"sample_id": sample.sample_id, "reason": str(error)})
                log.warning("skipped: %s", error)
                bar.update(1)
                if len(skipped) > allowed_bad:
                    raise ExtractionError(too_many_bad(skipped, len(samples), max_bad_share)) from None
            if len(batch) == batch_size or (batch and index == len(samples) - 1):
                unknown += _forward(model, processor, recorder, resolved, batch, anyres_padding)
                counted += len(batch)
                bar.update(len(batch))
                batch = []
            bar.set_postfix(skipped=len(skipped), refresh=False)
    active, tokens = recorder.results()
    sums, squares, maxima = recorder.moment_results()
    if skipped:
        log.warning("%s: %d of %d samples skipped (bad images)", domain, len(skipped), len(samples))
    if unknown:
        log.warning(
            "%s: %d prompt tokens are the tokenizer's unknown token (words outside its vocabulary)", domain, unknown
        )
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
            "anyres_padding": anyres_padding,
            "dtype": str(model.dtype).removeprefix("torch."),
            "padding": RIGHT,
            "unknown_tokens": unknown,
            **(settings or {}),
        },
        sums=sums,
        squares=squares,
        maxima=maxima,
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


def _forward(model, processor, recorder: ActivationRecorder, sites: list[ResolvedSite], batch, anyres_padding) -> int:
    prompts, images = zip(*batch)
    inputs = encode(model, processor, images, prompts, padding_side=RIGHT).inputs
    recorder.set_masks(position_masks(model, inputs, sites, anyres_padding))
    model(**inputs, **forward_options(model))
    return unknown_positions(processor.tokenizer, inputs["input_ids"], inputs["attention_mask"])
