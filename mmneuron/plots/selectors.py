"""Figures of the selector bake-off at the neuron level: how much the methods' sets overlap, and how
the sets settle as the number of statistics samples grows."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..neuron_stats import ANY
from . import save_figure


def plot_method_overlaps(table: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Per site, the Jaccard overlap of each pair of methods' sets (union over domains)."""
    union = table[table["domain"] == ANY]
    sites = sorted(union["site"].unique())
    methods = list(dict.fromkeys([*union["method"], *union["other_method"]]))
    size = 0.55 * len(methods) + 1.8
    fig, axes = plt.subplots(1, max(len(sites), 1), figsize=(size * max(len(sites), 1) + 1.2, size), squeeze=False)
    image = None
    for ax, site in zip(axes[0], sites):
        matrix = np.eye(len(methods))
        for row in union[union["site"] == site].itertuples():
            i, j = methods.index(row.method), methods.index(row.other_method)
            matrix[i, j] = matrix[j, i] = row.jaccard
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            text = "" if np.isnan(value) else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if value > 0.6 else "black")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(methods)), methods, fontsize=8)
        ax.set_title(site, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="Jaccard overlap (union over domains)", shrink=0.8)
    fig.suptitle("neuron sets shared between selection methods")
    return save_figure(fig, stem)


def plot_sample_curve(table: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Per site, the overlap with the all-shards selection against the number of shards, per method."""
    union = table[table["domain"] == ANY]
    sites = sorted(union["site"].unique())
    fig, axes = plt.subplots(1, max(len(sites), 1), figsize=(3.4 * max(len(sites), 1), 3.0), squeeze=False)
    for ax, site in zip(axes[0], sites):
        rows = union[union["site"] == site]
        for method, group in rows.groupby("method", sort=False):
            ax.plot(group["shards"], group["jaccard"], marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("shards of statistics samples merged")
        ax.set_title(site, fontsize=9)
    axes[0, 0].set_ylabel("Jaccard with all shards (union over domains)")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("how many samples are enough: overlap with the full-data selection")
    fig.tight_layout()
    return save_figure(fig, stem)
