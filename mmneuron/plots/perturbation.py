"""Figures of the hidden-state perturbation: per LLM layer, cosine similarity and relative L2
distance of the ablated residual stream to the clean one, a line per condition and a panel per scope.

Solid: each domain's own neurons deactivated; dashed with a band: the random controls (mean and
range over seeds); grey: ``none`` (the run-to-run noise floor, flat at 1 / 0 on a deterministic device).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ..conditions import NONE, OWN, RANDOM
from . import save_figure

METRICS = {"cosine": ("cosine_mean", "cosine similarity"), "rel_l2": ("rel_l2_mean", "relative L2 distance")}
_SCOPE_ORDER = ("image", "text", "all")
_SCOPE_LABELS = {"image": "image positions", "text": "text positions", "all": "all positions"}


def _scopes(table: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(table["scope"]))
    return [s for s in _SCOPE_ORDER if s in present] + [s for s in present if s not in _SCOPE_ORDER]


def _colours(table: pd.DataFrame) -> dict[str, object]:
    conditions = [c for c in dict.fromkeys(table["condition"]) if c != NONE]
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(conditions)}
    colours[NONE] = "0.5"
    return colours


def _draw(ax, rows: pd.DataFrame, column: str, colours: dict) -> None:
    """Lines per condition over layers; values are averaged over the domains in ``rows``."""
    own = rows[rows["control"] == OWN].groupby(["condition", "layer"], sort=False)[column].mean()
    for condition in dict.fromkeys(own.index.get_level_values("condition")):
        curve = own.loc[condition]
        ax.plot(
            curve.index,
            curve.to_numpy(),
            marker="o",
            markersize=3,
            color=colours[condition],
            linewidth=1 if condition == NONE else 1.6,
            label=condition,
        )
    random = rows[rows["control"] == RANDOM]
    if not random.empty:
        per_seed = random.groupby(["condition", "seed", "layer"], sort=False)[column].mean()
        spread = per_seed.groupby(["condition", "layer"], sort=False).agg(["mean", "min", "max"])
        for condition in dict.fromkeys(spread.index.get_level_values("condition")):
            band = spread.loc[condition]
            ax.plot(band.index, band["mean"], linestyle="--", linewidth=1.2, color=colours[condition])
            ax.fill_between(band.index, band["min"], band["max"], color=colours[condition], alpha=0.15, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)  # absolute values, even for near-flat curves
    ax.grid(alpha=0.3)


def _legend(fig, colours: dict, has_random: bool) -> None:
    handles = [
        plt.Line2D(
            [],
            [],
            color=colour,
            marker="o",
            markersize=3,
            label=f"{condition} (noise floor)" if condition == NONE else condition,
        )
        for condition, colour in colours.items()
    ]
    handles.append(plt.Line2D([], [], color="black", label="domain's own neurons"))
    if has_random:
        handles.append(
            plt.Line2D([], [], color="black", linestyle="--", label="random neurons\n(mean, range over seeds)")
        )
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="condition", title_fontsize=8)


def plot_layers(table: pd.DataFrame, stem: str | Path, title: str = "") -> list[Path]:
    """Cosine (top) and relative L2 (bottom) per layer, a panel per scope, averaged over domains."""
    if table.empty:
        raise ValueError("no perturbation rows to plot")
    scopes, colours = _scopes(table), _colours(table)
    fig, axes = plt.subplots(
        len(METRICS),
        len(scopes),
        squeeze=False,
        sharex=True,
        layout="constrained",
        figsize=(3.8 * len(scopes) + 1.8, 5.6),
    )
    for row, (column, label) in enumerate(METRICS.values()):
        for col, scope in enumerate(scopes):
            ax = axes[row, col]
            _draw(ax, table[table["scope"] == scope], column, colours)
            if row == 0:
                ax.set_title(_SCOPE_LABELS.get(scope, scope), fontsize=10)
            if col == 0:
                ax.set_ylabel(label)
            if row == len(METRICS) - 1:
                ax.set_xlabel("LLM layer")
    _legend(fig, colours, (table["control"] == RANDOM).any())
    domains = ", ".join(dict.fromkeys(table["domain"]))
    fig.suptitle(
        f"{title or 'Perturbation'}: ablated vs clean residual stream per layer\n"
        f"mean over positions, then over domains ({domains}); each domain's own neurons deactivated",
        fontsize=10,
    )
    return save_figure(fig, stem)


def plot_by_domain(table: pd.DataFrame, stem: str | Path, metric: str = "rel_l2", title: str = "") -> list[Path]:
    """One metric per layer: a row of panels (one per scope) for each domain."""
    if table.empty:
        raise ValueError("no perturbation rows to plot")
    column, label = METRICS[metric]
    scopes, colours = _scopes(table), _colours(table)
    domains = list(dict.fromkeys(table["domain"]))
    fig, axes = plt.subplots(
        len(domains),
        len(scopes),
        squeeze=False,
        sharex=True,
        layout="constrained",
        figsize=(3.8 * len(scopes) + 1.8, 2.2 * len(domains) + 1),
    )
    for row, domain in enumerate(domains):
        for col, scope in enumerate(scopes):
            ax = axes[row, col]
            _draw(ax, table[(table["domain"] == domain) & (table["scope"] == scope)], column, colours)
            if row == 0:
                ax.set_title(_SCOPE_LABELS.get(scope, scope), fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{domain}\n{label}", fontsize=9)
            if row == len(domains) - 1:
                ax.set_xlabel("LLM layer")
    _legend(fig, colours, (table["control"] == RANDOM).any())
    fig.suptitle(f"{title or 'Perturbation'}: {label} of the ablated residual stream per layer and domain", fontsize=10)
    return save_figure(fig, stem)


def plot_all(table: pd.DataFrame, folder: str | Path, title: str = "") -> list[Path]:
    folder = Path(folder)
    paths = plot_layers(table, folder / "perturbation_layers", title)
    for metric in METRICS:
        paths += plot_by_domain(table, folder / f"perturbation_{metric}_by_domain", metric, title)
    return paths
