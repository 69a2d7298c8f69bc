"""The paper's claims as verdicts computed from a run's tables (never written by hand).

Each check takes the tables it needs (``None`` where the run did not make one) and returns a
:class:`Verdict`: ``supported``, ``not supported`` or ``not testable`` with the reason, and the
evidence as a small table. The thresholds are module constants, stated in every verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE = "supported", "not supported", "not testable"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE)

MAX_SHARE = 0.01  # domain-specific neurons per module: under 1% (the paper)
LAYER_ALPHA = 0.05  # layer distribution: uneven when a uniform spread is this unlikely
LAYER_DRAWS = 10_000  # Monte Carlo draws of the uniform spread (seeded: the same verdict every time)
MIN_NEURONS_FOR_LAYERS = 10  # fewer neurons than this cannot show a layer distribution
MAX_ACCURACY_CHANGE = 0.10  # "at most about 10%": points on the metric's 0-1 scale
MIN_PERTURBATION = 0.10  # hidden states "perturbed": relative L2 at some layer at least this
MAX_IMAGE_TOP_PROB = 0.40  # the lens' top token at image positions stays under 40%
LOGLIK = "reference_loglik"  # the score table's log-likelihood rows (not an accuracy)


@dataclass
class Verdict:
    claim: str
    verdict: str
    reason: str
    evidence: pd.DataFrame = field(default_factory=pd.DataFrame)


def _untestable(claim: str, reason: str) -> Verdict:
    return Verdict(claim, NOT_TESTABLE, reason)


def neuron_share(neurons: dict | None) -> Verdict:
    """Domain-specific neurons (the union over domains) are under 1% of each module's neurons."""
    claim = f"Domain-specific neurons are under {MAX_SHARE:.0%} of each module's neurons"
    if not neurons or not neurons.get("sites"):
        return _untestable(claim, "no neuron sets (neurons.json) in this run")
    rows = []
    for site, entry in sorted(neurons["sites"].items()):
        chosen = {tuple(pair) for pairs in entry["by_domain"].values() for pair in pairs}
        total = entry["layers"] * entry["width"]
        rows.append({"site": site, "neurons": len(chosen), "of": total, "share": len(chosen) / total})
    table = pd.DataFrame(rows)
    over = table[table["share"] >= MAX_SHARE]
    top_rate = neurons.get("parameters", {}).get("top_rate")
    bound = f"; the selection's top_rate {top_rate} bounds the share from above" if top_rate is not None else ""
    if over.empty:
        return Verdict(
            claim, SUPPORTED, f"every site under {MAX_SHARE:.0%} (largest {table['share'].max():.2%}){bound}", table
        )
    sites = ", ".join(f"{row.site} {row.share:.2%}" for row in over.itertuples())
    return Verdict(claim, NOT_SUPPORTED, f"at or over {MAX_SHARE:.0%}: {sites}{bound}", table)


def layer_distribution(neurons: dict | None, site: str = "lm", seed: int = 0) -> Verdict:
    """The domain-specific neurons of ``site`` are spread unevenly over its layers: a chi-square
    statistic against the uniform spread, its p-value from seeded multinomial draws."""
    claim = f"Domain-specific neurons of the {site} site concentrate in particular layers (not spread evenly)"
    entry = (neurons or {}).get("sites", {}).get(site)
    if entry is None:
        return _untestable(claim, f"no {site} neuron set in this run")
    layers = entry["layers"] - len(entry.get("inert_layers", []))
    chosen = {tuple(pair) for pairs in entry["by_domain"].values() for pair in pairs}
    if layers < 2 or len(chosen) < MIN_NEURONS_FOR_LAYERS:
        return _untestable(claim, f"{len(chosen)} neuron(s) over {layers} layer(s): too few to show a distribution")
    active = [layer for layer in range(entry["layers"]) if layer not in set(entry.get("inert_layers", []))]
    observed = np.array([sum(1 for layer, _ in chosen if layer == index) for index in active], dtype=float)
    p_value = _uniform_p_value(observed, seed)
    table = pd.DataFrame({"layer": active, "neurons": observed.astype(int)})
    reading = f"chi-square against an even spread: p = {p_value:.4f} ({LAYER_DRAWS} draws), threshold {LAYER_ALPHA}"
    return Verdict(claim, SUPPORTED if p_value < LAYER_ALPHA else NOT_SUPPORTED, reading, table)


def _uniform_p_value(observed: np.ndarray, seed: int) -> float:
    n, k = observed.sum(), len(observed)
    expected = n / k
    statistic = ((observed - expected) ** 2 / expected).sum()
    draws = np.random.default_rng(seed).multinomial(int(n), [1 / k] * k, size=LAYER_DRAWS)
    simulated = ((draws - expected) ** 2 / expected).sum(axis=1)
    return float((1 + (simulated >= statistic - 1e-12).sum()) / (1 + LAYER_DRAWS))


def small_accuracy_change(scores: pd.DataFrame | None, perturbation: pd.DataFrame | None) -> Verdict:
    """Deactivating a domain's own neurons changes its score by at most about 10 points while the
    hidden states are perturbed (relative L2 at least 0.1 at some layer, for that condition)."""
    claim = (
        f"Deactivation changes accuracy by at most about {MAX_ACCURACY_CHANGE:.0%} "
        f"while hidden states are perturbed (relative L2 >= {MIN_PERTURBATION} at some layer)"
    )
    if scores is None or scores.empty:
        return _untestable(claim, "no ablation scores in this run")
    own = own_effects(scores)
    own = own[own["metric"] != LOGLIK]
    if own.empty:
        return _untestable(claim, "no deactivation condition besides `none` was scored")
    table = own[["condition", "domain", "metric", "delta", "delta_low", "delta_high"]].reset_index(drop=True)
    if perturbation is None or perturbation.empty:
        return Verdict(
            claim,
            NOT_TESTABLE,
            "no perturbation table: which sets are empty, and 'while perturbed', are untested",
            table,
        )
    shifted = perturbation[(perturbation["control"] == "domain") & (perturbation["scope"] == "all")]
    per_run = shifted.groupby(["condition", "domain"]).agg(
        max_rel_l2=("rel_l2_mean", "max"), deactivated=("deactivated", "max")
    )
    table = table.merge(per_run.reset_index(), on=["condition", "domain"], how="left")
    # deactivating an empty set changes nothing by construction: such rows are no evidence either way
    table = table[table["deactivated"].fillna(0) > 0].reset_index(drop=True)
    if table.empty:
        return _untestable(claim, "no domain has neurons at the deactivated sites")
    small = bool((table["delta"].abs() <= MAX_ACCURACY_CHANGE).all())
    largest = table.loc[table["delta"].abs().idxmax()]
    change = f"largest change {largest['delta']:+.3f} ({largest['condition']} on {largest['domain']})"
    perturbed = table["max_rel_l2"] >= MIN_PERTURBATION
    reading = (
        f"{change} over {len(table)} effects of non-empty sets; "
        f"{int(perturbed.sum())} of them with hidden states perturbed"
    )
    if not small:
        return Verdict(claim, NOT_SUPPORTED, f"{reading}: a change over {MAX_ACCURACY_CHANGE:.0%}", table)
    if not perturbed.any():
        return Verdict(claim, NOT_SUPPORTED, f"{reading}: no deactivation perturbs the hidden states that much", table)
    return Verdict(claim, SUPPORTED, reading, table)


def own_effects(scores: pd.DataFrame) -> pd.DataFrame:
    """The score rows of DAPE's own-domain deactivations (each domain's own set, all questions)."""
    rows = scores[(scores["control"] == "domain") & (scores["condition"] != "none")]
    rows = rows[rows["source_domain"] == rows["domain"]]
    if "subset" in rows:
        rows = rows[rows["subset"] == "all"]
    if "method" in rows:
        rows = rows[rows["method"] == "dape"]
    return rows


def three_stages(stages: pd.DataFrame | None, scope: str = "image") -> Verdict:
    """The lens entropy at image positions shows all three stages in every domain (mmneuron.stages)."""
    claim = "The image-position entropy curve has three stages (alignment, processing, token selection)"
    if stages is None or stages.empty:
        return _untestable(claim, "no logit-lens stages table in this run")
    rows = stages[stages["scope"] == scope]
    if rows.empty:
        return _untestable(claim, f"no {scope}-position rows in the stages table")
    found = rows["alignment_last"].notna() & rows["processing_last"].notna() & rows["token_selection_first"].notna()
    table = rows[["domain", "layers", "alignment_last", "processing_last", "token_selection_first", "note"]]
    reading = f"all three stages in {int(found.sum())} of {len(rows)} domain(s)"
    return Verdict(claim, SUPPORTED if found.all() else NOT_SUPPORTED, reading, table.reset_index(drop=True))


def image_top_probability(lens: pd.DataFrame | None) -> Verdict:
    """At image positions the lens' mean top-token probability stays under 40% at every layer."""
    claim = f"At image positions the decoded top token's probability stays under {MAX_IMAGE_TOP_PROB:.0%}"
    if lens is None or lens.empty:
        return _untestable(claim, "no logit-lens table in this run")
    rows = lens[lens["scope"] == "image"]
    if rows.empty:
        return _untestable(claim, "no image-position rows in the lens table")
    table = (
        rows.groupby("domain", as_index=False)["top_prob_mean"]
        .max()
        .rename(columns={"top_prob_mean": "max_over_layers"})
    )
    worst = table.loc[table["max_over_layers"].idxmax()]
    reading = f"largest mean top-token probability {worst['max_over_layers']:.3f} ({worst['domain']})"
    return Verdict(
        claim, SUPPORTED if (table["max_over_layers"] < MAX_IMAGE_TOP_PROB).all() else NOT_SUPPORTED, reading, table
    )


def random_comparison(scores: pd.DataFrame | None, random: pd.DataFrame | None) -> pd.DataFrame:
    """Every own-domain deactivation effect beside its random controls' band (empty when absent)."""
    if scores is None or scores.empty:
        return pd.DataFrame()
    flips = [column for column in ("flip_rate", "flip_low", "flip_high") if column in scores]
    own = own_effects(scores)[["condition", "domain", "metric", "delta", "delta_low", "delta_high", *flips]]
    if random is None or random.empty:
        return own.reset_index(drop=True)
    band = random[random["source_domain"] == random["domain"]]
    if "subset" in band:
        band = band[band["subset"] == "all"]
    band = band[["condition", "domain", "metric", "seeds", "delta_min", "delta_max", "p_empirical"]]
    band = band.rename(columns={"delta_min": "random_min", "delta_max": "random_max"})
    return own.merge(band, on=["condition", "domain", "metric"], how="left").reset_index(drop=True)
