"""Logit lens: decode every LLM layer's residual stream with the model's final norm and unembedding.

For each layer the lens reads ``lm_head(norm(h))`` at every non-padding position and keeps only
additive summaries per scope (image / text positions): the entropy (natural log) of the decoded
distribution, its square, the top token's probability and how often each token id is the top one.
Logits exist for one layer and ``chunk_size`` positions at a time, never for all layers x positions
x vocabulary (tens of GB for a 7B model), and each layer is decoded in its forward hook as soon as
it has run, so only one layer's hidden states are kept: peak memory does not grow with depth.

The residual stream is every decoder layer's output, read by forward hooks (the final norm's input
for the last layer, which in transformers 5 ``hidden_states[-1]`` is not: it is already normed),
so the last layer's lens is exactly the model's own logits. Batches are padded on the right
through the input path, so a sample's lens does not depend on its batch.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from mmneuron.data.samples import Sample
from mmneuron.defaults import LENS, SCOPES
from mmneuron.errors import MmneuronError
from mmneuron.models.decoder import decoder_layers, each_layer_output, final_norm_and_unembed
from mmneuron.models.inputs import RIGHT, build_prompt, check_template, domain_batches, scope_masks, with_all_scope

log = logging.getLogger(__name__)

_, IMAGE, TEXT = SCOPES

TABLE_COLUMNS = (
    "model",
    "domain",
    "scope",
    "layer",
    "n",
    "samples",
    "entropy_mean",
    "entropy_std",
    "top_prob_mean",
    "top_tokens",
)


class LensError(MmneuronError):
    """A model or input the lens cannot handle; the message names the model type."""


class LensHead:
    """``h -> logits`` (float32) as the model computes its own: final norm, lm_head, Gemma's softcap."""

    def __init__(self, model: nn.Module):
        self.norm, self.head = final_norm_and_unembed(model)
        # Gemma 2 (PaliGemma 2) caps logits as cap * tanh(logits / cap) when the config says so.
        self.softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)

    def __call__(self, hidden: torch.Tensor, normed: bool = False) -> torch.Tensor:
        logits = self.head(hidden if normed else self.norm(hidden)).float()
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


@dataclass
class ScopeStats:
    """Additive summaries per layer for one scope of positions."""

    n: np.ndarray  # positions (int64, layers)
    entropy_sum: np.ndarray  # float64, layers
    entropy_sq_sum: np.ndarray
    top_prob_sum: np.ndarray
    top_ids: list[Counter]  # per layer: token id -> positions where it is the top token

    @classmethod
    def empty(cls, layers: int) -> ScopeStats:
        zeros = lambda dtype: np.zeros(layers, dtype=dtype)  # noqa: E731
        return cls(
            zeros(np.int64), zeros(np.float64), zeros(np.float64), zeros(np.float64), [Counter() for _ in range(layers)]
        )

    @property
    def layers(self) -> int:
        return len(self.n)

    def merge(self, other: ScopeStats) -> ScopeStats:
        if other.layers != self.layers:
            raise LensError(f"cannot merge lens statistics of {self.layers} and {other.layers} layers")
        return ScopeStats(
            self.n + other.n,
            self.entropy_sum + other.entropy_sum,
            self.entropy_sq_sum + other.entropy_sq_sum,
            self.top_prob_sum + other.top_prob_sum,
            [a + b for a, b in zip(self.top_ids, other.top_ids)],
        )

    def entropy_mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.entropy_sum / self.n, np.nan)

    def entropy_std(self) -> np.ndarray:
        """Standard deviation over positions (population, ddof=0)."""
        mean = self.entropy_mean()
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(self.n > 0, self.entropy_sq_sum / self.n, np.nan) - mean**2
        return np.sqrt(np.clip(var, 0.0, None))

    def top_prob_mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.top_prob_sum / self.n, np.nan)


@dataclass
class Trace:
    """Top-1 token and its probability per layer at chosen positions: ``ids``/``probs`` are layers x positions."""

    positions: list[tuple[int, int]]  # (row, position) in the batch
    ids: np.ndarray
    probs: np.ndarray


@torch.no_grad()
def logit_lens(
    model: nn.Module,
    inputs: Mapping,
    scopes_masks: Mapping[str, torch.Tensor],
    chunk_size: int = 4096,
    trace: Sequence[tuple[int, int]] = (),
) -> tuple[dict[str, ScopeStats], Trace]:
    """Per-scope lens statistics of one batch, and the top tokens at the ``trace`` positions.

    ``scopes_masks`` maps a scope name to a bool mask (batch x seq) of the positions it counts.
    Only ``chunk_size`` x vocabulary logits (and their softmax) exist at any time.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    lens = LensHead(model)
    masks = {name: mask.bool() for name, mask in scopes_masks.items()}
    union = torch.zeros_like(next(iter(masks.values())))
    for mask in masks.values():
        union |= mask
    flat = {name: mask[union] for name, mask in masks.items()}  # scope membership of each counted position
    index = torch.full(union.shape, -1, dtype=torch.long, device=union.device)
    index[union] = torch.arange(int(union.sum()), device=union.device)
    trace_index = [int(index[row, pos]) for row, pos in trace]
    if any(i < 0 for i in trace_index):
        raise LensError(f"trace positions must be counted positions: {list(trace)}")

    layers = len(decoder_layers(model))
    stats = {name: ScopeStats.empty(layers) for name in masks}
    trace_ids = np.zeros((layers, len(trace)), dtype=np.int64)
    trace_probs = np.zeros((layers, len(trace)), dtype=np.float64)

    def read(layer: int, hidden: torch.Tensor) -> None:
        """Decode one layer's output as soon as the layer has run: only one layer's states are ever
        kept, so peak memory does not grow with depth."""
        device = hidden.device
        rows = hidden[union.to(device)]  # positions x hidden
        top_id = torch.empty(len(rows), dtype=torch.long, device=device)
        top_prob = torch.empty(len(rows), dtype=torch.float32, device=device)
        entropy = torch.empty(len(rows), dtype=torch.float32, device=device)
        for start in range(0, len(rows), chunk_size):
            logp = torch.log_softmax(lens(rows[start : start + chunk_size]), dim=-1).to(device)
            p = logp.exp()
            # 0 * log 0 = 0 (a -inf logit would otherwise give nan)
            entropy[start : start + chunk_size] = -torch.where(p > 0, p * logp, 0.0).sum(-1)
            top_prob[start : start + chunk_size], top_id[start : start + chunk_size] = p.max(-1)
            del logp, p
        for name, member in flat.items():
            member = member.to(device)
            s = stats[name]
            s.n[layer] += int(member.sum())
            s.entropy_sum[layer] += entropy[member].double().sum().item()
            s.entropy_sq_sum[layer] += entropy[member].double().pow(2).sum().item()
            s.top_prob_sum[layer] += top_prob[member].double().sum().item()
            ids, counts = torch.unique(top_id[member], return_counts=True)
            s.top_ids[layer].update(dict(zip(ids.tolist(), counts.tolist())))
        if trace_index:
            trace_ids[layer] = top_id[trace_index].cpu().numpy()
            trace_probs[layer] = top_prob[trace_index].double().cpu().numpy()

    each_layer_output(model, inputs, read)
    return stats, Trace(list(trace), trace_ids, trace_probs)


def token_text(tokenizer, token_id: int) -> str:
    """A token as readable text (special tokens kept; newlines and tabs escaped)."""
    text = tokenizer.decode([token_id], skip_special_tokens=False).strip()
    return json.dumps(text, ensure_ascii=False)[1:-1] or repr(tokenizer.convert_ids_to_tokens(token_id))


class LensAccumulator:
    """Lens statistics merged over batches, per domain; gives the tidy table of the logit lens."""

    def __init__(self, model_name: str = ""):
        self.model_name = model_name
        self.stats: dict[str, dict[str, ScopeStats]] = {}
        self.samples: Counter = Counter()

    def add(self, domain: str, stats: Mapping[str, ScopeStats], samples: int) -> None:
        current = self.stats.setdefault(domain, {})
        for scope, value in stats.items():
            current[scope] = current[scope].merge(value) if scope in current else value
        self.samples[domain] += samples

    def scope_stats(self, domain: str) -> dict[str, ScopeStats]:
        """The domain's statistics per scope, in scope order, with ``all`` = image + text when not given directly."""
        return with_all_scope(self.stats[domain])

    def table(self, tokenizer, top_tokens: int = 5) -> pd.DataFrame:
        """One row per (domain, scope, layer); ``top_tokens`` lists the most frequent top-1 tokens
        with their share of positions, e.g. ``"</s> 0.41; the 0.10"``."""
        rows = []
        for domain in sorted(self.stats):
            for scope, s in self.scope_stats(domain).items():
                means, stds, probs = s.entropy_mean(), s.entropy_std(), s.top_prob_mean()
                for layer in range(s.layers):
                    common = s.top_ids[layer].most_common(top_tokens)
                    rows.append(
                        {
                            "model": self.model_name,
                            "domain": domain,
                            "scope": scope,
                            "layer": layer,
                            "n": int(s.n[layer]),
                            "samples": self.samples[domain],
                            "entropy_mean": means[layer],
                            "entropy_std": stds[layer],
                            "top_prob_mean": probs[layer],
                            "top_tokens": "; ".join(
                                f"{token_text(tokenizer, i)} {c / s.n[layer]:.2f}" for i, c in common
                            ),
                        }
                    )
        return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


@dataclass
class LensRun:
    accumulator: LensAccumulator
    examples: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {sample_id, domain, reason}
    settings: dict = field(default_factory=dict)


def _trace_positions(masks: Mapping[str, torch.Tensor], row: int, image_positions: int, text_positions: int):
    """A few image positions spread over the image, and the last text positions (where the answer starts)."""
    image = masks[IMAGE][row].nonzero().flatten().tolist()
    text = masks[TEXT][row].nonzero().flatten().tolist()
    if len(image) > image_positions:
        image = [image[round(i)] for i in np.linspace(0, len(image) - 1, image_positions)]
    return [(IMAGE, p) for p in image] + [(TEXT, p) for p in text[-text_positions:]]


def _example(processor, sample: Sample, inputs, row: int, chosen, trace: Trace, offset: int) -> dict:
    tokenizer = processor.tokenizer
    ids = trace.ids[:, offset : offset + len(chosen)]
    probs = trace.probs[:, offset : offset + len(chosen)]
    return {
        "sample_id": sample.sample_id,
        "domain": sample.domain,
        "question": sample.question,
        "positions": [
            {
                "position": int(pos),
                "scope": scope,
                "input_token": token_text(tokenizer, int(inputs["input_ids"][row, pos])),
            }
            for scope, pos in chosen
        ],
        "top_tokens": [[token_text(tokenizer, int(i)) for i in layer] for layer in ids],
        "top_probs": [[round(float(p), 4) for p in layer] for layer in probs],
    }


def run_lens(
    model: nn.Module,
    processor,
    samples: Iterable[Sample],
    prompt_template: str = LENS.prompt,
    batch_size: int = LENS.batch_size,
    chunk_size: int = LENS.chunk_size,
    chat: bool = LENS.chat,
    examples_per_domain: int = 2,
    image_positions: int = 6,
    text_positions: int = 4,
    model_name: str = "",
    progress: bool = True,
) -> LensRun:
    """The logit lens over ``samples`` (any mix of domains; batches never mix domains).

    Prompts: ``prompt_template`` filled in by the input path (``{question}``, ``{options}``, meta
    fields; the image placeholder of the architecture, or with ``chat`` one user turn of the
    processor's chat template). Corrupt images are logged by sample id and listed in ``skipped``;
    the rest go on.
    """
    check_template(prompt_template)
    arch = model.config.model_type
    settings = {
        "prompt": prompt_template,
        "chat": chat,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "padding": RIGHT,
        "dtype": str(model.dtype).removeprefix("torch."),
    }
    run = LensRun(LensAccumulator(model_name), settings=settings)
    model.eval()
    batches = domain_batches(
        model,
        processor,
        samples,
        lambda s: build_prompt(processor, arch, prompt_template, s, chat),
        batch_size,
        RIGHT,
        "lens",
        progress,
    )
    for domain, batch, encoded, skipped in batches:
        run.skipped += skipped
        if encoded is None:
            continue
        inputs = encoded.inputs
        masks = scope_masks(model, inputs)
        wanted = max(0, examples_per_domain - sum(e["domain"] == domain for e in run.examples))
        chosen = [
            _trace_positions(masks, row, image_positions, text_positions) for row in range(min(wanted, len(batch)))
        ]
        trace = [(row, pos) for row, picks in enumerate(chosen) for _, pos in picks]
        stats, traced = logit_lens(model, inputs, masks, chunk_size=chunk_size, trace=trace)
        run.accumulator.add(domain, stats, len(batch))
        offset = 0
        for row, picks in enumerate(chosen):
            run.examples.append(_example(processor, batch[row], inputs, row, picks, traced, offset))
            offset += len(picks)
    if run.skipped:
        log.warning("skipped %d sample(s) with unusable images", len(run.skipped))
    return run
