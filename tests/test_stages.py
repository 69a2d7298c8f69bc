"""The three-stage rule on constructed entropy curves, and the per-domain stage table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmneuron.stages import STAGES, StageError, StageRule, detect_stages, stage_table

THREE = [5, 5, 5, 4, 2, 1, 0.9, 0.8, 0.9, 1.1]  # the docstring's example


def test_clear_three_stage_curve():
    stages = detect_stages(THREE)
    assert (stages.alignment, stages.processing, stages.token_selection) == ((0, 2), (3, 7), (8, 9))
    assert (stages.peak_layer, stages.min_layer, stages.note) == (0, 7, "three stages")
    assert [stages.stage_of(layer) for layer in range(10)] == ["alignment"] * 3 + ["processing"] * 5 + [
        "token_selection"
    ] * 2


def test_sigmoid_curve_with_an_early_rise_and_a_late_rise():
    layers = np.arange(32)
    curve = (
        6 - 4 / (1 + np.exp(-(layers - 16) / 1.5)) + 0.08 * np.maximum(0, layers - 26)
    )  # final rise 0.4, about 10% of the fall
    curve[:3] -= [0.3, 0.2, 0.1]  # entropy climbs at first: the peak is layer 3, still alignment
    stages = detect_stages(curve)
    assert stages.peak_layer == 3
    assert stages.alignment[0] == 0 and 11 <= stages.processing[0] <= 14
    assert stages.min_layer == stages.processing[1] and stages.token_selection[1] == 31
    assert 22 <= stages.min_layer <= 27


def test_monotone_falling_curve_has_no_token_selection():
    stages = detect_stages([6, 5.5, 4, 2, 1.5, 1.4])
    assert stages.alignment == (0, 0) and stages.processing == (1, 5) and stages.token_selection is None
    assert "minimum at the last layer" in stages.note


def test_tiny_final_rise_is_not_a_stage():
    stages = detect_stages([5, 5, 3, 1, 1.01, 1.02])  # rise 0.02 < 0.05 * fall 4
    assert stages.token_selection is None and stages.processing == (2, 5)
    assert "does not rise" in stages.note
    assert detect_stages([5, 5, 3, 1, 1.01, 1.02], StageRule(min_rise=0.001)).token_selection == (4, 5)


def test_rising_curve_has_no_stages():
    stages = detect_stages([1, 2, 3, 4, 5])
    assert (stages.alignment, stages.processing, stages.token_selection) == (None, None, None)
    assert "does not fall" in stages.note


@pytest.mark.parametrize("curve", [[3.0] * 8, [3, 3.01, 2.99, 3, 3.02, 3], [0.0] * 4, [5, 1]])
def test_flat_or_short_curves_have_no_stages(curve):
    stages = detect_stages(curve)
    assert all(getattr(stages, name) is None for name in STAGES)
    assert stages.note.startswith("no stages")


def test_start_fraction_moves_the_start_of_processing():
    curve = [5, 4.8, 4.4, 3, 1, 1.5]
    assert detect_stages(curve, StageRule(start_fraction=0.02)).processing[0] == 1
    assert detect_stages(curve, StageRule(start_fraction=0.3)).processing[0] == 3


def test_stages_cover_every_layer_when_found():
    rng = np.random.default_rng(0)
    for _ in range(200):
        curve = rng.normal(size=12).cumsum()
        stages = detect_stages(curve)
        if stages.processing is not None:
            assert all(stages.stage_of(layer) is not None for layer in range(12))


def test_bad_input_and_rules_are_refused():
    with pytest.raises(StageError, match="finite"):
        detect_stages([1, float("nan"), 2])
    with pytest.raises(StageError, match="min_rise"):
        StageRule(min_rise=1.5)


def test_stage_table_per_domain():
    rows = [
        {"domain": d, "scope": scope, "layer": layer, "entropy_mean": value}
        for d, curve in (("med", THREE), ("ad", [1.0] * 10))
        for scope in ("image", "text")
        for layer, value in enumerate(curve)
    ]
    table = stage_table(pd.DataFrame(rows).sample(frac=1, random_state=0))  # order must not matter
    assert list(table["domain"]) == ["ad", "med"]
    med = table.set_index("domain").loc["med"]
    assert (med["alignment_last"], med["processing_first"], med["token_selection_first"]) == (2, 3, 8)
    assert med["start_fraction"] == 0.1 and med["scope"] == "image"
    assert pd.isna(table.set_index("domain").loc["ad", "processing_first"])
    with pytest.raises(StageError, match="scope 'all'"):
        stage_table(pd.DataFrame(rows), scope="all")
