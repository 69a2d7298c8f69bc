"""Answer one domain's evaluation samples under one condition, and write the answers as JSONL.

Each record holds the run's identity (model, condition, control, seed, source and evaluation
domain, sites, neurons deactivated, decoding) and the sample's (sample_id, question, meta,
prompt, prediction, references, and the reference answer's teacher-forced log-likelihood).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mmneuron.ablation.likelihood import answer_loglik, reference_answer
from mmneuron.conditions import Condition, condition_sites
from mmneuron.data.samples import Sample, decode_images
from mmneuron.defaults import ABLATION, DECODINGS, EVALUATION, RUN
from mmneuron.errors import MmneuronError
from mmneuron.hooks.deactivate import Deactivation
from mmneuron.models.generation import decoding_settings, generate_answers
from mmneuron.models.inputs import build_prompt, check_template
from mmneuron.models.sites import resolve_sites
from mmneuron.selection import Selection

log = logging.getLogger(__name__)

GREEDY, COMPAT = DECODINGS


class AblationError(MmneuronError):
    """Inputs an ablation run cannot use; the message names the file, sample or key."""


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
    value: float = ABLATION.value  # what a deactivated neuron outputs

    def __post_init__(self) -> None:
        if self.decoding not in (GREEDY, COMPAT):
            raise AblationError(f"decoding must be {GREEDY!r} or {COMPAT!r}, got {self.decoding!r}")
        check_template(self.prompt)


def run_ablation(
    model,
    processor,
    samples: Sequence[Sample],
    selection: Selection,
    condition: Condition,
    settings: Settings,
    model_name: str,
    progress: bool = True,
) -> tuple[list[dict], list[dict]]:
    """Answer ``samples`` (one domain) under ``condition``: (records, skipped samples).

    Samples with unusable images are skipped, logged and returned with the reason.
    """
    domains = sorted({sample.domain for sample in samples})
    if len(domains) != 1:
        raise AblationError(f"an ablation run evaluates one domain; the samples hold {domains or 'none'}")
    domain = domains[0]
    ids = [sample.sample_id for sample in samples]
    if len(set(ids)) != len(ids):
        raise AblationError(f"duplicate sample ids in domain {domain}")
    sites = resolve_sites(model)
    selection.check_sites(sites)
    neurons = condition.neurons(selection, domain)
    deactivation = Deactivation(sites, neurons, settings.value)

    kept, images, skipped = decode_images(samples)
    model_type = model.config.model_type
    prompts = [build_prompt(processor, model_type, settings.prompt, sample, settings.chat) for sample in kept]
    references = [reference_answer(sample.answers) if sample.answers else None for sample in kept]
    missing = [sample.sample_id for sample, answer in zip(kept, references) if answer is None]
    if missing:
        raise AblationError(f"domain {domain}: samples without reference answers: {missing[:5]}")

    temperature = settings.temperature if settings.decoding == COMPAT else None
    decoding = decoding_settings(model, processor, settings.max_new_tokens, temperature)
    with deactivation:
        predictions = generate_answers(
            model, processor, prompts, images, decoding, settings.batch_size, progress, seed=settings.seed
        )
        likelihoods = (
            answer_loglik(model, processor, prompts, images, references, settings.batch_size, progress)
            if settings.likelihood
            else [(None, None)] * len(kept)
        )

    identity = {
        "model": model_name,
        "condition": condition.name,
        "control": condition.control,
        "seed": condition.seed,
        "source_domain": condition.source or domain,
        "domain": domain,
        "sites": list(condition_sites(condition.name, list(selection.sites))),
        "deactivated": deactivation.count,
        "selection": {"model": selection.model, **selection.parameters},
        "settings": asdict(settings),
        "generation": decoding,
        "dtype": str(model.dtype).removeprefix("torch."),
    }
    records = [
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


def write_answers(records: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    return path


def read_answers(path: str | Path) -> list[dict]:
    """The records of one answers file; a line that is not a JSON object raises, naming the line."""
    path = Path(path)
    if not path.exists():
        raise AblationError(f"answers file not found: {path}")
    records = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise AblationError(f"{path}, line {number}: not JSON ({error})") from None
            if not isinstance(record, dict):
                raise AblationError(f"{path}, line {number}: expected a JSON object")
            records.append(record)
    return records
