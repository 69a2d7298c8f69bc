"""Answer one domain's evaluation samples under a group of conditions with one loaded model.

Each record holds the run's identity (model, condition, control, seed, source and evaluation
domain, sites, neurons deactivated, decoding) and the sample's (sample_id, question, meta,
prompt, prediction, references, and the reference answer's teacher-forced log-likelihood).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mmneuron.ablation.answers import AblationError
from mmneuron.ablation.likelihood import answer_loglik, reference_answer
from mmneuron.conditions import Condition, condition_sites
from mmneuron.counts import Counts
from mmneuron.data.samples import Sample, decode_images
from mmneuron.defaults import ABLATION, DECODINGS, EVALUATION, RUN
from mmneuron.hooks.deactivate import Deactivation
from mmneuron.models.generation import decoding_settings, generate_answers
from mmneuron.models.inputs import build_prompt, check_template, scope_masks
from mmneuron.models.sites import resolve_sites
from mmneuron.selection import Selection

log = logging.getLogger(__name__)

GREEDY, COMPAT = DECODINGS


@dataclass
class Settings:
    """How answers are produced; recorded with every answer."""

    prompt: str = EVALUATION.prompts["default"]  # fields: {question}, {options}, any key of the sample's meta
    chat: bool = EVALUATION.chat  # wrap the prompt as one user turn of the processor's chat template
    batch_size: int = ABLATION.batch_size
    max_new_tokens: int = ABLATION.max_new_tokens
    decoding: str = ABLATION.decoding  # greedy, or compat: sampling at `temperature`, seeded by `seed`
    temperature: float = ABLATION.temperature
    seed: int = RUN.seed
    likelihood: bool = ABLATION.likelihood  # also the reference answer's teacher-forced log-likelihood
    value: float = ABLATION.value  # what a deactivated neuron outputs (a condition may say otherwise)

    def __post_init__(self) -> None:
        if self.decoding not in (GREEDY, COMPAT):
            raise AblationError(f"decoding must be {GREEDY!r} or {COMPAT!r}, got {self.decoding!r}")
        check_template(self.prompt)


def run_ablation(
    model,
    processor,
    samples: Sequence[Sample],
    selection: Selection,
    conditions: Sequence[Condition],
    settings: Settings,
    model_name: str,
    progress: bool = True,
    counts: Sequence[Counts] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Answer ``samples`` (one domain) under each of ``conditions`` with one loaded model:
    (records, condition by condition in the given order, and skipped samples). ``counts`` (every
    domain's activation statistics) give the mean activations of conditions that ask for them.

    Images are decoded and prompts built once; samples with unusable images are skipped, logged
    and returned with the reason.
    """
    domains = sorted({sample.domain for sample in samples})
    if len(domains) != 1:
        raise AblationError(f"an ablation run evaluates one domain; the samples hold {domains or 'none'}")
    domain = domains[0]
    ids = [sample.sample_id for sample in samples]
    if len(set(ids)) != len(ids):
        raise AblationError(f"duplicate sample ids in domain {domain}")
    if len(set(conditions)) != len(conditions):
        raise AblationError(f"a condition is given twice: {[c.run for c in conditions]}")
    sites = resolve_sites(model)
    selection.check_sites(sites)
    deactivations = [c.deactivation(sites, selection, domain, settings.value, counts) for c in conditions]

    kept, images, skipped = decode_images(samples)
    model_type = model.config.model_type
    prompts = [build_prompt(processor, model_type, settings.prompt, sample, settings.chat) for sample in kept]
    references = [reference_answer(sample.answers) if sample.answers else None for sample in kept]
    missing = [sample.sample_id for sample, answer in zip(kept, references) if answer is None]
    if missing:
        raise AblationError(f"domain {domain}: samples without reference answers: {missing[:5]}")

    temperature = settings.temperature if settings.decoding == COMPAT else None
    decoding = decoding_settings(model, processor, settings.max_new_tokens, temperature)
    records = []
    for condition, deactivation in zip(conditions, deactivations):
        positions = _positions(model, deactivation)
        with deactivation:
            predictions = generate_answers(
                model,
                processor,
                prompts,
                images,
                decoding,
                settings.batch_size,
                progress,
                seed=settings.seed,
                on_inputs=positions,
            )
            likelihoods = (
                answer_loglik(
                    model, processor, prompts, images, references, settings.batch_size, progress, on_inputs=positions
                )
                if settings.likelihood
                else [(None, None)] * len(kept)
            )
        identity = {
            "model": model_name,
            "method": selection.label,
            "condition": condition.name,
            "control": condition.control,
            "seed": condition.seed,
            "source_domain": condition.source or domain,
            "domain": domain,
            "sites": list(condition_sites(condition.name, list(selection.sites))),
            "deactivated": deactivation.count,
            "intervention": deactivation.intervention.record(),
            "selection": {"model": selection.model, **selection.parameters},
            "settings": asdict(settings),
            "generation": decoding,
            "dtype": str(model.dtype).removeprefix("torch."),
        }
        records += [
            {
                **identity,
                "sample_id": sample.sample_id,
                "question": sample.question,
                "meta": sample.meta,
                "prompt": prompt,
                "prediction": prediction,
                "references": list(sample.answers),
                "reference_answer": answer,
                "reference_loglik": loglik,
                "reference_tokens": tokens,
            }
            for sample, prompt, prediction, answer, (loglik, tokens) in zip(
                kept, prompts, predictions, references, likelihoods
            )
        ]
    return records, skipped


def _positions(model, deactivation: Deactivation):
    """What gives ``deactivation`` each input's positions, where its intervention needs them."""
    if not deactivation.intervention.needs_positions:
        return None

    def set_positions(inputs, answer=None) -> None:
        deactivation.set_positions(scope_masks(model, inputs), answer)

    return set_positions
