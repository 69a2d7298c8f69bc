"""Figures of neuron sets: where they sit (layers), how domains share them, and the DAPE cut-off."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..neuron_stats import jaccard
from ..selection import Selection, SelectionError
from . import save_figure


def _colours(domains: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {d: cmap(i % 10) for i, d in enumerate(domains)}


def _subtitle(selection: Selection, site: str) -> str:
    info = selection.sites[site]
    return f"{site}: {len(info.selected)} of {info.layers * info.width} neurons ({info.scope} tokens)"


def plot_layer_distribution(selection: Selection, stem: str | Path) -> list[Path]:
    """Domain-specific neurons per layer, one panel per site and one line per domain; inert layers hatched."""
    sites = sorted(selection.sites)
    colours = _colours(selection.domains)
    fig, axes = plt.subplots(len(sites), 1, figsize=(8, 2.8 * len(sites)), squeeze=False, layout="constrained")
    for ax, site in zip(axes[:, 0], sites):
        info = selection.sites[site]
        counts = {d: np.bincount([l for l, _ in info.by_domain[d]], minlength=info.layers) for d in selection.domains}
        if info.layers == 1:
            ax.bar(
                selection.domains,
                [counts[d][0] for d in selection.domains],
                color=[colours[d] for d in selection.domains],
            )
            ax.set_xlabel("domain (the site has a single layer)")
            if info.inert_layers:
                ax.set_facecolor("0.92")
                ax.text(0.99, 0.95, "inert layer", transform=ax.transAxes, ha="right", va="top", fontsize=8)
        else:
            layers = np.arange(info.layers)
            for d in selection.domains:
                ax.plot(layers, counts[d], marker="o", markersize=3, color=colours[d], label=d)
            for layer in info.inert_layers:
                ax.axvspan(layer - 0.5, layer + 0.5, facecolor="0.85", hatch="//", edgecolor="0.5", linewidth=0)
                ax.text(layer, 1.0, "inert", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7)
            ax.set_xlim(-0.5, info.layers - 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("layer")
            ax.legend(title="domain", fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.set_ylabel("neurons")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(_subtitle(selection, site), fontsize=9, loc="left", pad=12)
    fig.suptitle(f"{selection.model}: domain-specific neurons per layer")
    return save_figure(fig, stem)


def plot_overlap(selection: Selection, stem: str | Path) -> list[Path]:
    """Per site, neurons shared by each pair of domains (numbers; diagonal: set size), coloured by Jaccard."""
    sites, domains = sorted(selection.sites), selection.domains
    size = 0.6 * len(domains) + 1.6
    fig, axes = plt.subplots(
        1, len(sites), figsize=(size * len(sites) + 1.2, size + 0.6), squeeze=False, layout="constrained"
    )
    image = None
    for ax, site in zip(axes[0], sites):
        sets = [set(selection.sites[site].by_domain[d]) for d in domains]
        score = np.array([[jaccard(a, b) for b in sets] for a in sets])
        image = ax.imshow(score, vmin=0, vmax=1, cmap="Blues")
        for i, a in enumerate(sets):
            for j, b in enumerate(sets):
                dark = not np.isnan(score[i, j]) and score[i, j] > 0.6
                ax.text(j, i, str(len(a & b)), ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_xticks(range(len(domains)), domains, rotation=45, ha="right")
        ax.set_yticks(range(len(domains)), domains)
        ax.set_xlabel("domain")
        ax.set_title(_subtitle(selection, site), fontsize=9)
    axes[0, 0].set_ylabel("domain")
    fig.colorbar(image, ax=axes[0].tolist(), label="Jaccard overlap", shrink=0.8)
    fig.suptitle(f"{selection.model}: neurons shared between domains (numbers; diagonal: all of the domain)")
    return save_figure(fig, stem)


def plot_dape_histogram(selection: Selection, stem: str | Path, bins: int = 40) -> list[Path]:
    """Per site, DAPE of the neurons that fire at all, candidates apart, with the selection cut-off."""
    sites = sorted(selection.sites)
    fig, axes = plt.subplots(len(sites), 1, figsize=(7, 2.6 * len(sites)), squeeze=False, layout="constrained")
    edges = np.linspace(0, math.log(max(len(selection.domains), 2)), bins + 1)
    for ax, site in zip(axes[:, 0], sites):
        info = selection.sites[site]
        if info.entropy is None or info.probabilities is None or info.candidate_mask is None:
            raise SelectionError(f"site '{site}': the DAPE histogram needs the entropies; build it from select()")
        fires = (info.probabilities > 0).any(0).numpy()
        candidate = info.candidate_mask.numpy()
        entropy = info.entropy.numpy()
        heights, _, _ = ax.hist(
            [entropy[candidate], entropy[fires & ~candidate]],
            bins=edges,
            stacked=True,
            color=["tab:blue", "0.75"],
            label=[f"candidates (p > tau = {info.tau:.3g})", "other neurons that fire"],
        )
        if info.entropy_cutoff is not None:
            ax.axvline(
                info.entropy_cutoff,
                color="tab:red",
                linestyle="--",
                label=f"cut-off: {len(info.selected)} lowest (k = {info.k})",
            )
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(0, max(float(np.max(heights)), 1) * 3)  # head room for the legend
        ax.set_xlabel("DAPE (entropy over domains, nats)")
        ax.set_ylabel("neurons")
        ax.set_title(_subtitle(selection, site), fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{selection.model}: DAPE of neurons and the selection cut-off")
    return save_figure(fig, stem)


def plot_all(selection: Selection, folder: str | Path) -> list[Path]:
    """The three figures (the DAPE histogram for a DAPE selection only), written into ``folder``."""
    folder = Path(folder)
    return [
        *plot_layer_distribution(selection, folder / "neuron_layers"),
        *plot_overlap(selection, folder / "neuron_overlap"),
        *(plot_dape_histogram(selection, folder / "dape_histogram") if selection.method == "dape" else []),
    ]
