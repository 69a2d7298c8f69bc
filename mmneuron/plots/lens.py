"""Figures of the logit lens: entropy per layer (stages shaded) and the top decoded tokens of a few samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..stages import STAGES, StageRule, detect_stages
from . import save_figure

_STAGE_COLOURS = {"alignment": "#dbe9f6", "processing": "#fde0c5", "token_selection": "#d9f0d3"}
_STAGE_LABELS = {"alignment": "alignment", "processing": "information processing", "token_selection": "token selection"}
_PANELS = (
    ("image", "entropy_mean", "image tokens: entropy (nats)"),
    ("text", "entropy_mean", "text tokens: entropy (nats)"),
    ("image", "top_prob_mean", "image tokens: top-token probability"),
)


def _shade(ax, stages) -> None:
    for name in STAGES:
        span = getattr(stages, name)
        if span is not None:
            ax.axvspan(span[0] - 0.5, span[1] + 0.5, color=_STAGE_COLOURS[name], zorder=0, linewidth=0)


def plot_entropy(table: pd.DataFrame, stem: str | Path, rule: StageRule | None = None, title: str = "") -> list[Path]:
    """Mean entropy per layer, one line per domain, for image and text positions, and the image
    positions' mean top-token probability. Shaded: the stages of the domains' mean image curve."""
    domains = sorted(table["domain"].unique())
    colours = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(domains)}
    image = table[table["scope"] == "image"].pivot(index="layer", columns="domain", values="entropy_mean")
    stages = detect_stages(image.mean(axis=1).to_numpy(), rule or StageRule()) if not image.empty else None
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(4.2 * len(_PANELS), 3.6), layout="constrained")
    for ax, (scope, column, label) in zip(axes, _PANELS):
        part = table[table["scope"] == scope].sort_values("layer")
        if stages is not None:
            _shade(ax, stages)
        for domain in domains:
            rows = part[part["domain"] == domain]
            ax.plot(rows["layer"], rows[column], marker="o", markersize=3, color=colours[domain], label=domain)
        if part.empty:
            ax.text(0.5, 0.5, f"no {scope} positions", transform=ax.transAxes, ha="center", va="center")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("LLM layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)  # absolute nats, even for near-flat curves
        if column == "top_prob_mean":
            ax.set_ylim(0, 1)
    axes[0].set_ylabel("mean over positions")
    handles = [plt.Line2D([], [], color=colours[d], marker="o", markersize=3, label=d) for d in domains]
    if stages is not None:
        handles += [Patch(color=_STAGE_COLOURS[n], label=_STAGE_LABELS[n]) for n in STAGES if getattr(stages, n)]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="domain / stage", title_fontsize=8)
    note = stages.note if stages is not None else "no image positions"
    fig.suptitle(
        f"{title or 'Logit lens'}: entropy of the decoded distribution per layer\n"
        f"shaded: stages of the mean image curve ({note})",
        fontsize=10,
    )
    return save_figure(fig, stem)


def _short(text: str, width: int = 8) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_examples(examples: Sequence[dict], stem: str | Path, title: str = "", limit: int = 4) -> list[Path]:
    """Per sample, a layers x positions grid of the top decoded token, coloured by its probability.
    Columns: a few image positions, then the last text positions (input token below each column)."""
    examples = list(examples)[:limit]
    if not examples:
        raise ValueError("no lens examples to plot")
    layers = len(examples[0]["top_tokens"])
    columns = max(len(e["positions"]) for e in examples)
    cols = min(2, len(examples))
    rows = math.ceil(len(examples) / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        squeeze=False,
        layout="constrained",
        figsize=(0.6 * columns * cols + 1.5, (0.22 * layers + 1.5) * rows),
    )
    image = None
    for ax, example in zip(axes.flat, examples):
        probs = np.array(example["top_probs"])
        image = ax.imshow(probs, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1)
        for layer, tokens in enumerate(example["top_tokens"]):
            for col, token in enumerate(tokens):
                ax.text(
                    col,
                    layer,
                    _short(token),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="black" if probs[layer, col] > 0.6 else "white",
                )
        positions = example["positions"]
        ax.set_xticks(
            range(len(positions)),
            [f"{'[img]' if p['scope'] == 'image' else _short(p['input_token'])}\n{p['position']}" for p in positions],
            fontsize=6,
        )
        first_text = next((i for i, p in enumerate(positions) if p["scope"] != "image"), None)
        if first_text:
            ax.axvline(first_text - 0.5, color="white", linewidth=2)
        ax.set_yticks(range(layers))
        ax.tick_params(axis="y", labelsize=6)
        ax.set_ylabel("LLM layer")
        ax.set_title(f"{example['domain']} / {example['sample_id']}: {_short(example['question'], 40)}", fontsize=8)
    for ax in list(axes.flat)[len(examples) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, label="top-token probability", shrink=0.8)
    fig.suptitle(f"{title or 'Logit lens'}: top decoded token per layer (image positions, then text)", fontsize=10)
    return save_figure(fig, stem)


def plot_all(
    table: pd.DataFrame, examples: Sequence[dict], folder: str | Path, rule: StageRule | None = None, title: str = ""
) -> list[Path]:
    folder = Path(folder)
    paths = plot_entropy(table, folder / "lens_entropy", rule, title)
    if examples:
        paths += plot_examples(examples, folder / "lens_examples", title)
    return paths
