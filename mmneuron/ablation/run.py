"""Answer one domain's evaluation samples under one condition, and write the answers as JSONL.

Each record holds the run's identity (model, condition, control, seed, source and evaluation
domain, sites, neurons deactivated, decoding) and the sample's (sample_id, question, meta,
prompt, prediction, references, and the reference answer's teacher-forced log-likelihood).
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mmneuron.ablation.conditions import Condition, condition_sites
from mmneuron.ablation.likelihood import answer_loglik, reference_answer
from mmneuron.data.samples import Sample, decode_images
from mmneuron.hooks.deactivate import Deactivation
from mmneuron.models.generation import generate_answers, user_turn
from mmneuron.models.sites import IMAGE, image_prompt, resolve_sites
from mmneuron.selection import Selection

log = logging.getLogger(__name__)

GREEDY, COMPAT = "greedy", "compat"
DEFAULT_PROMPT = IMAGE + "\n{question}"


class AblationError(ValueError):
    """Inputs an ablation run cannot use; the message names the file, sample or key."""


@dataclass
class Settings:
    """How answers are produced; recorded with every answer."""

    prompt: str = DEFAULT_PROMPT  # fields: {question}, {options}, any key of the sample's meta
    chat: bool = False  # wrap the prompt as one user turn of the processor's chat template
    batch_size: int = 8
    max_new_tokens: int = 16
    decoding: str = GREEDY  # or "compat": sampling at `temperature`, seeded by `seed`
    temperature: float = 0.9
    seed: int = 0
    likelihood: bool = True  # also the reference answer's teacher-forced log-likelihood
    value: float = 0.0  # what a deactivated neuron outputs

    def __post_init__(self) -> None:
        if self.decoding not in (GREEDY, COMPAT):
            raise AblationError(f"decoding must be {GREEDY!r} or {COMPAT!r}, got {self.decoding!r}")
        fields = {name for _, name, _, _ in string.Formatter().parse(self.prompt) if name}
        if "question" not in fields:
            raise AblationError(f"the prompt template needs a {{question}} field: {self.prompt!r}")


def _options(options) -> str:
    if isinstance(options, dict):
        return "\n".join(f"{key}. {text}" for key, text in options.items())
    return "\n".join(f"{letter}. {text}" for letter, text in zip(string.ascii_uppercase, options))


def format_prompt(processor, model_type: str, settings: Settings, sample: Sample) -> str:
    """The sample's prompt: the template filled in, then the chat template or the model's image prompt."""
    fields = {key: value for key, value in sample.meta.items() if isinstance(value, (str, int, float))}
    if "options" in sample.meta:
        fields["options"] = _options(sample.meta["options"])
    try:
        text = settings.prompt.format(**{**fields, "question": sample.question})
    except (KeyError, IndexError) as error:
        raise AblationError(
            f"sample {sample.sample_id} ({sample.domain}): the prompt template {settings.prompt!r} "
            f"needs {error}, which the sample's meta lacks"
        ) from None
    if settings.chat:
        return user_turn(processor, text.replace(IMAGE, "").strip())
    return image_prompt(model_type, text if IMAGE in text else f"{IMAGE}\n{text}")


def check_selection(selection: Selection, sites) -> None:
    """Every site of the neuron file exists in the model with the same layers and width."""
    model_sites = {site.name: site for site in sites}
    for name, info in selection.sites.items():
        site = model_sites.get(name)
        if site is None:
            raise AblationError(f"the neuron file's site '{name}' is not a site of the model ({sorted(model_sites)})")
        if (site.layers, site.width) != (info.layers, info.width):
            raise AblationError(
                f"the neuron file's site '{name}' has {info.layers} layers x {info.width} neurons, "
                f"the model's has {site.layers} x {site.width}"
            )


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
    check_selection(selection, sites)
    neurons = condition.neurons(selection, domain)
    deactivation = Deactivation(sites, neurons, settings.value)

    kept, images, skipped = decode_images(samples)
    model_type = model.config.model_type
    prompts = [format_prompt(processor, model_type, settings, sample) for sample in kept]
    references = [reference_answer(sample.answers) if sample.answers else None for sample in kept]
    missing = [sample.sample_id for sample, answer in zip(kept, references) if answer is None]
    if missing:
        raise AblationError(f"domain {domain}: samples without reference answers: {missing[:5]}")

    tokenizer = processor.tokenizer
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        with deactivation:
            predictions = generate_answers(
                model,
                processor,
                prompts,
                images,
                settings.batch_size,
                settings.max_new_tokens,
                progress,
                temperature=settings.temperature if settings.decoding == COMPAT else None,
                seed=settings.seed,
            )
            likelihoods = (
                answer_loglik(model, processor, prompts, images, references, settings.batch_size, progress)
                if settings.likelihood
                else [(None, None)] * len(kept)
            )
    finally:
        tokenizer.padding_side = padding_side

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
