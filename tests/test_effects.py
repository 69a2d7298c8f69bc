"""Bootstrap intervals, paired differences, random-control summaries and the score table."""

import math

import numpy as np
import pandas as pd
import pytest

from mmneuron.errors import MmneuronError
from mmneuron.vqa import effects
from mmneuron.vqa.effects import (
    SCORE_COLUMNS,
    EffectError,
    bootstrap_ci,
    paired_difference_ci,
    score_table,
    summarize_random_controls,
    wilson_interval,
)


def bernoulli(n, p=0.6, seed=1):
    return np.random.default_rng(seed).binomial(1, p, size=n).astype(float)


def test_bootstrap_contains_mean_and_is_seeded():
    scores = bernoulli(200)
    mean, low, high = bootstrap_ci(scores)
    assert mean == pytest.approx(scores.mean())
    assert low < mean < high
    assert bootstrap_ci(scores, seed=0) == (mean, low, high)
    assert bootstrap_ci(scores, seed=1) != (mean, low, high)


def test_bootstrap_narrows_with_n():
    widths = []
    for n in (20, 200, 2000):
        _, low, high = bootstrap_ci(bernoulli(n))
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    # Roughly the normal-theory width 2 * 1.96 * sqrt(p (1 - p) / n) at n = 2000.
    assert widths[2] == pytest.approx(2 * 1.96 * math.sqrt(0.24 / 2000), rel=0.2)


def test_bootstrap_alpha_and_constant_scores():
    scores = bernoulli(500)
    _, low90, high90 = bootstrap_ci(scores, alpha=0.1)
    _, low95, high95 = bootstrap_ci(scores, alpha=0.05)
    assert low95 <= low90 < high90 <= high95
    assert bootstrap_ci([0.7] * 5, n_boot=10) == pytest.approx((0.7, 0.7, 0.7))


def test_bootstrap_chunks_do_not_change_the_result(monkeypatch):
    scores = np.random.default_rng(3).random(50)
    whole = bootstrap_ci(scores, n_boot=101)
    monkeypatch.setattr(effects, "_BOOT_CELLS", 120)  # resample 2 rows of 50 at a time
    assert bootstrap_ci(scores, n_boot=101) == whole


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])
    with pytest.raises(EffectError, match="NaN"):  # data, e.g. a NaN log-likelihood: a user error
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([1.0], alpha=1.5)


def test_paired_difference_zero_for_identical_scores():
    baseline = {f"s{i}": value for i, value in enumerate(bernoulli(50))}
    assert paired_difference_ci(dict(baseline), baseline) == (0.0, 0.0, 0.0)


def test_paired_difference_aligns_by_sample_id():
    baseline = {"a": 1.0, "b": 0.0, "c": 1.0, "d": 0.5}
    condition = pd.Series({"d": 0.5, "c": 0.0, "b": 0.0, "a": 1.0})  # other order
    mean, low, high = paired_difference_ci(condition, baseline)
    assert mean == pytest.approx(-0.25)
    assert low <= mean <= high
    # Pairing matters: a constant shift has a zero-width interval, unlike the unpaired spread.
    shifted = {key: value - 0.1 for key, value in baseline.items()}
    assert paired_difference_ci(shifted, baseline) == pytest.approx((-0.1, -0.1, -0.1))


def test_paired_difference_rejects_different_samples():
    # Inconsistent answers files, not a programming error: a user error.
    with pytest.raises(EffectError, match=r"1 ids only in the condition \(e.g. \['x'\]\)") as info:
        paired_difference_ci({"a": 1.0, "x": 0.0}, {"a": 1.0, "b": 0.0})
    assert isinstance(info.value, MmneuronError)
    with pytest.raises(EffectError, match="duplicate sample ids"):
        paired_difference_ci(pd.Series([1.0, 0.0], index=["a", "a"]), {"a": 1.0})


def test_summarize_random_controls():
    summary = summarize_random_controls([0.5, 0.7, 0.6])
    assert summary == pytest.approx({"mean": 0.6, "std": 0.1, "min": 0.5, "max": 0.7, "n": 3})
    assert summary["n"] == 3 and isinstance(summary["n"], int)
    single = summarize_random_controls([0.4])
    assert math.isnan(single["std"]) and single["mean"] == 0.4
    with pytest.raises(ValueError):
        summarize_random_controls([])


def test_score_table_columns_and_delta():
    ids = [f"q{i}" for i in range(8)]
    base = dict(zip(ids, [1, 1, 1, 1, 0, 0, 1, 1]))
    ablated = dict(zip(ids, [1, 0, 1, 0, 0, 0, 1, 0]))
    records = {
        ("llava", "none", "com", "all", "vqa_accuracy"): base,
        ("llava", "lm", "com", "all", "vqa_accuracy"): ablated,
        ("llava", "lm", "doc", "all", "anls"): {"d1": 0.5, "d2": 1.0},  # no baseline for doc
    }
    table = score_table(records, n_boot=200)
    assert tuple(table.columns) == SCORE_COLUMNS
    assert list(table["condition"]) == ["none", "lm", "lm"]
    baseline_row, ablated_row, orphan = (table.iloc[i] for i in range(3))
    assert baseline_row["value"] == pytest.approx(0.75) and baseline_row["n"] == 8
    assert (baseline_row["delta"], baseline_row["delta_low"], baseline_row["delta_high"]) == (0, 0, 0)
    assert ablated_row["value"] == pytest.approx(0.375)
    assert ablated_row["delta"] == pytest.approx(-0.375)
    assert ablated_row["delta_low"] <= -0.375 <= ablated_row["delta_high"] <= 0
    assert ablated_row["ci_low"] <= 0.375 <= ablated_row["ci_high"]
    assert orphan["value"] == pytest.approx(0.75) and math.isnan(orphan["delta"])
    # The table is reproducible.
    pd.testing.assert_frame_equal(table, score_table(records, n_boot=200))


def test_score_table_names_the_record_on_error():
    records = {
        ("m", "none", "rs", "all", "exact_match"): {"a": 1.0, "b": 0.0},
        ("m", "lm", "rs", "all", "exact_match"): {"a": 1.0, "c": 0.0},
    }
    with pytest.raises(EffectError, match="m/lm/rs/all/exact_match: condition and baseline"):
        score_table(records)


def test_score_table_pairs_a_subset_with_the_baseline_of_the_same_subset():
    records = {
        ("m", "none", "rs", "all", "exact_match"): {"a": 1.0, "b": 1.0, "c": 0.0},
        ("m", "none", "rs", "question_type=count", "exact_match"): {"a": 1.0, "b": 1.0},
        ("m", "lm", "rs", "all", "exact_match"): {"a": 0.0, "b": 1.0, "c": 1.0},
        ("m", "lm", "rs", "question_type=count", "exact_match"): {"a": 0.0, "b": 1.0},
    }
    table = score_table(records, n_boot=200).set_index(["condition", "subset"])
    assert list(SCORE_COLUMNS[:5]) == ["model", "condition", "domain", "subset", "metric"]
    assert table.loc[("lm", "all"), "delta"] == 0.0  # (0 + 0 + 1) / 3 against the whole domain
    count = table.loc[("lm", "question_type=count")]
    assert (count.value, count.n, count.delta) == (0.5, 2, -0.5)  # against none's count rows only
    assert -1.0 <= count.delta_low <= -0.5 <= count.delta_high <= 0.0


def test_wilson_interval_against_published_values():
    # 2 of 10 at 95%: (0.0567, 0.5098), Wilson's formula worked by hand (the often tabulated 0.057 to 0.510)
    share, low, high = wilson_interval(2, 10)
    assert share == 0.2 and round(low, 4) == 0.0567 and round(high, 4) == 0.5098
    assert wilson_interval(0, 5)[1] == 0.0 and wilson_interval(5, 5)[2] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
