"""Figures of the deactivation experiment: change against ``none`` per condition and domain, with the
random controls' range, the same per question type where the table has subsets, the cross-domain
matrix (all of DAPE's sets), and, when several selection methods were run, their changes side by
side against the random band."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..ablation.scoring import DAPE, LOGLIK
from ..conditions import NONE, OWN
from ..vqa.effects import ALL
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


def _changes(rows: pd.DataFrame, controls: pd.DataFrame, column: str) -> tuple:
    """(conditions, columns, matrix, cell labels, column labels) of the change against ``none``:
    one row per condition, one column per value of ``column`` (``domain`` or ``subset``)."""
    conditions = [c for c in dict.fromkeys(rows["condition"]) if c != NONE]
    columns = list(dict.fromkeys(rows[column]))
    matrix = np.full((len(conditions), len(columns)), np.nan)
    labels = [[""] * len(columns) for _ in conditions]
    for row in rows[rows["condition"] != NONE].itertuples():
        i, j = conditions.index(row.condition), columns.index(getattr(row, column))
        matrix[i, j] = row.delta
        significant = row.delta_low > 0 or row.delta_high < 0
        text = f"{row.delta:+.3f}{'*' if significant else ''}"
        control = controls[
            (controls["condition"] == row.condition)
            & (controls["domain"] == row.domain)
            & (controls["subset"] == row.subset)
            & (controls["metric"] == row.metric)
        ]
        if not control.empty:
            c = control.iloc[0]
            text += f"\nrandom [{c.delta_min:+.3f}, {c.delta_max:+.3f}]"
        labels[i][j] = text
    baseline = rows[rows["condition"] == NONE].set_index(column)
    ticks = [
        f"{c}\n{baseline.loc[c, 'metric']}\nnone = {baseline.loc[c, 'value']:.3f}" if c in baseline.index else c
        for c in columns
    ]
    return conditions, columns, matrix, labels, ticks


def _plot_changes(rows: pd.DataFrame, controls: pd.DataFrame, column: str, stem, xlabel: str, title: str) -> list[Path]:
    conditions, columns, matrix, labels, ticks = _changes(rows, controls, column)
    fig, ax = plt.subplots(figsize=(1.9 * len(columns) + 2.5, 0.75 * max(len(conditions), 1) + 2), layout="constrained")
    if conditions:
        image = _draw(ax, matrix, labels, _limit(matrix))
        fig.colorbar(image, ax=ax, label="change against none", shrink=0.8)
    ax.set_xticks(range(len(columns)), ticks, fontsize=8)
    ax.set_yticks(range(len(conditions)), conditions, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("condition (sites deactivated)")
    ax.set_title(f"{title}\n(* 95% interval excludes 0; random: range over seeds)", fontsize=10)
    return save_figure(fig, stem)


def _own(table: pd.DataFrame, model: str, method: str = DAPE) -> pd.DataFrame:
    """The model's rows with each domain's own neurons (of ``method``'s sets) deactivated."""
    return table[
        (table["model"] == model)
        & (table["method"] == method)
        & (table["control"] == OWN)
        & (table["source_domain"] == table["domain"])
    ]


def plot_effects(
    table: pd.DataFrame, summary: pd.DataFrame, model: str, stem: str | Path, likelihood: bool = False
) -> list[Path]:
    """Heatmap of the change against ``none`` (conditions x domains) when each domain's own neurons
    are deactivated: each cell gives the change (``*``: its 95% interval excludes 0) and the range
    of the random controls' changes over seeds. ``likelihood`` plots the reference answer's mean
    log-likelihood instead of the domain's metric. Whole domains only (subset ``all``)."""
    rows = _own(table, model)
    rows = rows[((rows["metric"] == LOGLIK) == likelihood) & (rows["subset"] == ALL)]
    if rows.empty:
        raise ValueError(f"no scores of model {model!r} to plot")
    controls = summary[(summary["model"] == model) & (summary["source_domain"] == summary["domain"])]
    what = "log-likelihood of the reference answer" if likelihood else "score"
    xlabel = "evaluation domain (its own neurons deactivated)"
    return _plot_changes(rows, controls, "domain", stem, xlabel, f"{model}: change in {what}")


def plot_subsets(table: pd.DataFrame, summary: pd.DataFrame, model: str, domain: str, stem: str | Path) -> list[Path]:
    """The change in ``domain``'s metric against ``none`` per subset (the whole domain, then each
    question type), its own neurons deactivated; cells as in :func:`plot_effects`."""
    rows = _own(table, model)
    rows = rows[(rows["domain"] == domain) & (rows["metric"] != LOGLIK)]
    if rows.empty:
        raise ValueError(f"no scores of model {model!r} in domain {domain!r} to plot")
    controls = summary[(summary["model"] == model) & (summary["source_domain"] == domain)]
    title = f"{model}, domain {domain}: change in score per subset"
    return _plot_changes(rows, controls, "subset", stem, "subset of the evaluation samples", title)


def plot_cross_domain(table: pd.DataFrame, model: str, condition: str, stem: str | Path) -> list[Path]:
    """Cross-domain matrix for one condition: rows the domain whose neurons are deactivated, columns
    the evaluation domain, cells the change of the evaluation domain's metric against ``none``."""
    rows = table[
        (table["model"] == model)
        & (table["method"] == DAPE)
        & (table["control"] == OWN)
        & (table["condition"] == condition)
        & (table["metric"] != LOGLIK)
        & (table["subset"] == ALL)
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


def plot_methods(
    table: pd.DataFrame, summary: pd.DataFrame, model: str, stem: str | Path, likelihood: bool = False
) -> list[Path]:
    """The selector bake-off: per condition, the change against ``none`` of each domain's metric (or
    the reference log-likelihood) with its 95% interval when each method's own sets are deactivated,
    one marker per method, over the range of DAPE's random controls (grey band, min to max over
    seeds). Whole domains only."""
    rows = table[
        (table["model"] == model)
        & (table["control"] == OWN)
        & (table["source_domain"] == table["domain"])
        & (table["condition"] != NONE)
        & (table["subset"] == ALL)
        & ((table["metric"] == LOGLIK) == likelihood)
    ]
    if rows.empty:
        raise ValueError(f"no method scores of model {model!r} to plot")
    conditions, domains = list(dict.fromkeys(rows["condition"])), list(dict.fromkeys(rows["domain"]))
    methods = list(dict.fromkeys(rows["method"]))
    controls = summary[(summary["model"] == model) & (summary["source_domain"] == summary["domain"])]
    fig, axes = plt.subplots(
        1, len(conditions), figsize=(0.9 * len(domains) * len(conditions) + 2.5, 3.4), squeeze=False, sharey=True
    )
    step = 0.8 / max(len(methods), 1)
    for ax, condition in zip(axes[0], conditions):
        band = controls[(controls["condition"] == condition) & (controls["subset"] == ALL)]
        band = band[(band["metric"] == LOGLIK) == likelihood].set_index("domain")
        for x, domain in enumerate(domains):
            if domain in band.index:
                low, high = band.loc[domain, "delta_min"], band.loc[domain, "delta_max"]
                ax.fill_between([x - 0.45, x + 0.45], low, high, color="0.85", lw=0, label="random" if x == 0 else None)
        for i, method in enumerate(methods):
            mine = rows[(rows["condition"] == condition) & (rows["method"] == method)].set_index("domain")
            xs = [x - 0.4 + step * (i + 0.5) for x, d in enumerate(domains) if d in mine.index]
            deltas = mine.loc[[d for d in domains if d in mine.index]]
            errors = [deltas["delta"] - deltas["delta_low"], deltas["delta_high"] - deltas["delta"]]
            ax.errorbar(xs, deltas["delta"], yerr=errors, fmt="o", ms=4, capsize=2, label=method)
        ax.axhline(0, color="0.4", lw=0.6)
        ax.set_xticks(range(len(domains)), domains)
        ax.set_title(f"condition {condition}", fontsize=9)
    what = "reference log-likelihood" if likelihood else "score"
    axes[0, 0].set_ylabel(f"change in {what} against none")
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{model}: each method's own neurons deactivated (95% intervals; grey: DAPE's random controls)")
    fig.tight_layout()
    return save_figure(fig, stem)


def plot_all(table: pd.DataFrame, summary: pd.DataFrame, folder: str | Path) -> list[Path]:
    """Every figure: per model the score and likelihood heatmaps, a per-subset heatmap for each
    domain scored per question type, and a cross-domain matrix for each condition run with other
    domains' neurons."""
    folder = Path(folder)
    paths = []
    for model in dict.fromkeys(table["model"]):
        rows = table[table["model"] == model]
        paths += plot_effects(table, summary, model, folder / f"{model}_ablation_scores")
        if (rows["metric"] == LOGLIK).any():
            paths += plot_effects(table, summary, model, folder / f"{model}_ablation_loglik", likelihood=True)
        own = _own(table, model)
        for domain in dict.fromkeys(own.loc[own["subset"] != ALL, "domain"]):
            paths += plot_subsets(table, summary, model, domain, folder / f"{model}_ablation_scores_{domain}_subsets")
        cross = rows[(rows["method"] == DAPE) & (rows["control"] == OWN) & (rows["source_domain"] != rows["domain"])]
        for condition in dict.fromkeys(cross["condition"]):
            paths += plot_cross_domain(table, model, condition, folder / f"{model}_cross_domain_{condition}")
        if rows["method"].nunique() > 1:
            paths += plot_methods(table, summary, model, folder / f"{model}_methods_scores")
            if (rows["metric"] == LOGLIK).any():
                paths += plot_methods(table, summary, model, folder / f"{model}_methods_loglik", likelihood=True)
    return paths
