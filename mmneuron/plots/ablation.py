"""Figures of the deactivation experiment: change against ``none`` per condition and domain, with the
random controls' range, and the cross-domain matrix."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..ablation.scoring import LOGLIK
from ..conditions import NONE, OWN
from . import save_figure


def _limit(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _draw(ax, matrix: np.ndarray, labels: list[list[str]], limit: float) -> plt.cm.ScalarMappable:
    image = ax.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for (row, col), text in np.ndenumerate(np.array(labels, dtype=object)):
        dark = np.isfinite(matrix[row, col]) and abs(matrix[row, col]) > 0.6 * limit
        ax.text(col, row, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    return image


def plot_effects(
    table: pd.DataFrame, summary: pd.DataFrame, model: str, stem: str | Path, likelihood: bool = False
) -> list[Path]:
    """Heatmap of the change against ``none`` (conditions x domains) when each domain's own neurons
    are deactivated: each cell gives the change (``*``: its 95% interval excludes 0) and the range
    of the random controls' changes over seeds. ``likelihood`` plots the reference answer's mean
    log-likelihood instead of the domain's metric."""
    rows = table[(table["model"] == model) & (table["control"] == OWN) & (table["source_domain"] == table["domain"])]
    rows = rows[(rows["metric"] == LOGLIK) == likelihood]
    if rows.empty:
        raise ValueError(f"no scores of model {model!r} to plot")
    conditions = [c for c in dict.fromkeys(rows["condition"]) if c != NONE]
    domains = list(dict.fromkeys(rows["domain"]))
    matrix = np.full((len(conditions), len(domains)), np.nan)
    labels = [[""] * len(domains) for _ in conditions]
    controls = summary[(summary["model"] == model) & (summary["source_domain"] == summary["domain"])]
    for row in rows[rows["condition"] != NONE].itertuples():
        i, j = conditions.index(row.condition), domains.index(row.domain)
        matrix[i, j] = row.delta
        significant = row.delta_low > 0 or row.delta_high < 0
        text = f"{row.delta:+.3f}{'*' if significant else ''}"
        control = controls[
            (controls["condition"] == row.condition)
            & (controls["domain"] == row.domain)
            & (controls["metric"] == row.metric)
        ]
        if not control.empty:
            c = control.iloc[0]
            text += f"\nrandom [{c.delta_min:+.3f}, {c.delta_max:+.3f}]"
        labels[i][j] = text
    baseline = rows[rows["condition"] == NONE].set_index("domain")
    columns = [
        f"{d}\n{baseline.loc[d, 'metric']}\nnone = {baseline.loc[d, 'value']:.3f}" if d in baseline.index else d
        for d in domains
    ]
    fig, ax = plt.subplots(figsize=(1.9 * len(domains) + 2.5, 0.75 * max(len(conditions), 1) + 2), layout="constrained")
    if conditions:
        image = _draw(ax, matrix, labels, _limit(matrix))
        fig.colorbar(image, ax=ax, label="change against none", shrink=0.8)
    ax.set_xticks(range(len(domains)), columns, fontsize=8)
    ax.set_yticks(range(len(conditions)), conditions, fontsize=8)
    ax.set_xlabel("evaluation domain (its own neurons deactivated)")
    ax.set_ylabel("condition (sites deactivated)")
    what = "log-likelihood of the reference answer" if likelihood else "score"
    ax.set_title(f"{model}: change in {what}\n(* 95% interval excludes 0; random: range over seeds)", fontsize=10)
    return save_figure(fig, stem)


def plot_cross_domain(table: pd.DataFrame, model: str, condition: str, stem: str | Path) -> list[Path]:
    """Cross-domain matrix for one condition: rows the domain whose neurons are deactivated, columns
    the evaluation domain, cells the change of the evaluation domain's metric against ``none``."""
    rows = table[
        (table["model"] == model)
        & (table["control"] == OWN)
        & (table["condition"] == condition)
        & (table["metric"] != LOGLIK)
    ]
    domains = list(dict.fromkeys([*rows["domain"], *rows["source_domain"]]))
    matrix = np.full((len(domains), len(domains)), np.nan)
    labels = [["not run"] * len(domains) for _ in domains]
    for row in rows.itertuples():
        i, j = domains.index(row.source_domain), domains.index(row.domain)
        matrix[i, j] = row.delta
        significant = row.delta_low > 0 or row.delta_high < 0
        labels[i][j] = "" if math.isnan(row.delta) else f"{row.delta:+.3f}{'*' if significant else ''}"
    fig, ax = plt.subplots(figsize=(1.3 * len(domains) + 2.5, 1.0 * len(domains) + 1.5), layout="constrained")
    image = _draw(ax, matrix, labels, _limit(matrix))
    fig.colorbar(image, ax=ax, label="change against none", shrink=0.8)
    ax.set_xticks(range(len(domains)), domains)
    ax.set_yticks(range(len(domains)), domains)
    ax.set_xlabel("evaluation domain")
    ax.set_ylabel("neurons deactivated: domain")
    ax.set_title(f"{model}, condition {condition}: cross-domain deactivation\n(* 95% interval excludes 0)", fontsize=10)
    return save_figure(fig, stem)


def plot_all(table: pd.DataFrame, summary: pd.DataFrame, folder: str | Path) -> list[Path]:
    """Every figure: per model the score and likelihood heatmaps, and a cross-domain matrix for each
    condition run with other domains' neurons."""
    folder = Path(folder)
    paths = []
    for model in dict.fromkeys(table["model"]):
        rows = table[table["model"] == model]
        paths += plot_effects(table, summary, model, folder / f"{model}_ablation_scores")
        if (rows["metric"] == LOGLIK).any():
            paths += plot_effects(table, summary, model, folder / f"{model}_ablation_loglik", likelihood=True)
        cross = rows[(rows["control"] == OWN) & (rows["source_domain"] != rows["domain"])]
        for condition in dict.fromkeys(cross["condition"]):
            paths += plot_cross_domain(table, model, condition, folder / f"{model}_cross_domain_{condition}")
    return paths
