"""Effect sizes on per-sample scores: bootstrap intervals, paired differences, the score table.

Per-sample scores are given as a mapping (or pandas Series) from sample id to score, so that a
condition is always compared with the baseline on the same samples. Scores that cannot be compared
(different samples, duplicate ids, NaN) raise :class:`EffectError`, a user error: they come from
inconsistent answers files; bad arguments (``n_boot``, ``alpha``) stay ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mmneuron.errors import MmneuronError

BASELINE = "none"
ALL = "all"  # the subset of a whole-domain row
SCORE_COLUMNS = (
    "model",
    "condition",
    "domain",
    "subset",
    "metric",
    "value",
    "n",
    "ci_low",
    "ci_high",
    "delta",
    "delta_low",
    "delta_high",
)
_BOOT_CELLS = 4_000_000  # resampled values drawn at once: bounds memory for large n


class EffectError(MmneuronError):
    """Per-sample scores that cannot be compared: different samples, duplicate ids, NaN values."""


def bootstrap_ci(
    scores: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the sample mean and its percentile-bootstrap 1 - alpha interval.

    Resamples the scores with replacement ``n_boot`` times (numpy generator seeded by ``seed``,
    so the interval is reproducible) and takes the alpha/2 and 1 - alpha/2 quantiles of the
    resampled means.
    """
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"bootstrap needs a non-empty list of scores, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise EffectError("scores contain NaN or infinite values")
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CELLS // values.size)
    means = []
    for done in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - done)
        means.append(values[rng.integers(0, values.size, size=(rows, values.size))].mean(axis=1))
    low, high = np.quantile(np.concatenate(means), [alpha / 2, 1 - alpha / 2])
    return float(values.mean()), float(low), float(high)


def _as_series(scores: Mapping | pd.Series, what: str) -> pd.Series:
    series = scores if isinstance(scores, pd.Series) else pd.Series(dict(scores), dtype=float)
    if not series.index.is_unique:
        raise EffectError(f"{what}: duplicate sample ids {list(series.index[series.index.duplicated()][:5])}")
    return series.astype(float)


def paired_difference_ci(
    condition_scores: Mapping | pd.Series,
    baseline_scores: Mapping | pd.Series,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean difference, low, high) of condition minus baseline, paired by sample id.

    Both arguments map sample id -> score; the ids must be the same set (else EffectError with
    examples of the ids found on one side only). The interval is a percentile bootstrap of the
    per-sample differences, so each resample keeps a sample's two scores together.
    """
    condition = _as_series(condition_scores, "condition scores")
    baseline = _as_series(baseline_scores, "baseline scores")
    only_condition = condition.index.difference(baseline.index)
    only_baseline = baseline.index.difference(condition.index)
    if len(only_condition) or len(only_baseline):
        raise EffectError(
            "condition and baseline are scored on different samples: "
            f"{len(only_condition)} ids only in the condition (e.g. {list(only_condition[:3])}), "
            f"{len(only_baseline)} only in the baseline (e.g. {list(only_baseline[:3])})"
        )
    differences = condition - baseline.reindex(condition.index)
    return bootstrap_ci(differences.to_numpy(), n_boot=n_boot, alpha=alpha, seed=seed)


def wilson_interval(changed: int, n: int, z: float = 1.959964) -> tuple[float, float, float]:
    """The share ``changed / n`` with its Wilson score interval (95% for the default ``z``): unlike the
    normal approximation it stays inside [0, 1] and is not empty at a share of 0 or 1."""
    if n < 1 or not 0 <= changed <= n:
        raise ValueError(f"a share of {changed} in {n}: need n >= 1 and 0 <= changed <= n")
    share = changed / n
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return share, max(0.0, centre - half), min(1.0, centre + half)


def summarize_random_controls(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (ddof 1; NaN for a single value), min, max and n of a
    control repeated with several seeds (for example the score under random neurons)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("no random-control values to summarise")
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if array.size > 1 else float("nan"),
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(array.size),
    }


def score_table(
    records: Mapping[tuple[str, str, str, str, str], Mapping | pd.Series],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    baseline: str = BASELINE,
) -> pd.DataFrame:
    """The tidy score table, one row per (model, condition, domain, subset, metric).

    ``records`` maps (model, condition, domain, subset, metric) to per-sample scores (sample id ->
    score); ``subset`` is :data:`ALL` for a whole domain or names a part of it
    (``"question_type=count"``). ``value`` is the mean with its bootstrap interval
    ``ci_low``/``ci_high``; ``delta`` is the paired difference to the ``baseline`` condition of
    the same model, domain, subset and metric with its interval ``delta_low``/``delta_high`` (0
    for the baseline itself, NaN when no baseline was scored). Rows keep the order of ``records``.
    """
    rows = []
    for key, scores in records.items():
        model, _, domain, subset, metric = key
        try:
            series = _as_series(scores, "scores")
            value, low, high = bootstrap_ci(series.to_numpy(), n_boot=n_boot, alpha=alpha, seed=seed)
            reference = records.get((model, baseline, domain, subset, metric))
            delta = (float("nan"),) * 3
            if reference is not None:
                delta = paired_difference_ci(series, reference, n_boot=n_boot, alpha=alpha, seed=seed)
        except EffectError as error:
            raise EffectError(f"{'/'.join(map(str, key))}: {error}") from None
        rows.append((*key, value, len(series), low, high, *delta))
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
