"""Scoring answers files: the score table, per-question-type rows, option letters, user errors, figures."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from mmneuron.ablation.answers import AblationError, read_answers, write_answers
from mmneuron.ablation.scoring import LOGLIK, TABLE_COLUMNS, load_runs, score_runs, summarize_random
from mmneuron.errors import MmneuronError
from mmneuron.plots import ablation as ablation_plots
from mmneuron.plots.ablation import plot_all
from mmneuron.vqa.effects import EffectError
from mmneuron.vqa.metrics import MetricError

REFS = {"s0": ["yes"], "s1": ["no"], "s2": ["2"], "s3": ["red"]}


def _run_file(
    tmp_path,
    condition,
    predictions,
    seed=None,
    source=None,
    domain="rs",
    logliks=None,
    refs=REFS,
    metas=None,
    method=None,
):
    control = "domain" if seed is None else "random"
    records = [
        {
            "model": "m",
            "condition": condition,
            "control": control,
            "seed": seed,
            "source_domain": source or domain,
            "domain": domain,
            "sample_id": sid,
            "question": "q?",
            "prediction": pred,
            "references": refs[sid],
            "reference_loglik": None if logliks is None else logliks[i],
            **({} if metas is None else {"meta": metas[i]}),
            **({} if method is None else {"method": method}),  # answers written before the bake-off have none
        }
        for i, (sid, pred) in enumerate(zip(refs, predictions))
    ]
    name = f"{condition}_{seed}_{source}_{domain}_{method}.jsonl"
    return write_answers(records, tmp_path / name)


# --- the score table and the random controls (copied from test_ablation, with the subset column) ---------------


def test_scores_and_random_controls_by_hand(tmp_path):
    files = [
        _run_file(tmp_path, "none", ["yes", "no", "2", "blue"], logliks=[-1, -2, -3, -2]),
        _run_file(tmp_path, "lm", [" Yes ", "yes", "3", "blue"], logliks=[-2, -2, -4, -4]),
        _run_file(tmp_path, "lm", ["yes", "no", "1", "blue"], seed=1, logliks=[-1, -2, -3, -2]),
        _run_file(tmp_path, "lm", ["yes", "no", "2", "blue"], seed=2, logliks=[-1, -2, -3, -3]),
        _run_file(tmp_path, "lm", ["yes", "no", "2", "red"], source="med"),
        _run_file(tmp_path, "none", ["two"], domain="com", refs={"c0": ["2"] * 3 + ["3"] * 7}),
        _run_file(tmp_path, "lm", ["no", "no", "2", "blue"], method="margin", logliks=[-1, -3, -3, -2]),
    ]
    table = score_runs(load_runs(files), {"rs": "exact_match", "com": "vqa_accuracy"}, n_boot=200)
    assert tuple(table.columns) == TABLE_COLUMNS
    assert list(table.columns[:9]) == [
        "model",
        "method",
        "condition",
        "control",
        "seed",
        "source_domain",
        "domain",
        "subset",
        "metric",
    ]
    assert set(table["subset"]) == {"all"}  # no breakdown asked for
    margin = table[table["method"] == "margin"].set_index("metric")  # against the one none: 2 of 4 right, not 3
    assert margin.loc["exact_match"].delta == -0.25 and margin.loc[LOGLIK].delta == pytest.approx(-0.25)
    assert margin.loc["exact_match"].condition == "lm" and set(table["method"]) == {"dape", "margin"}
    everything, table = table, table[table["method"] == "dape"]
    rows = table.set_index(["condition", "control", "seed", "source_domain", "domain", "metric"])
    none = rows.loc[("none", "domain", pd.NA, "rs", "rs", "exact_match")]
    assert (none.value, none.n, none.delta) == (0.75, 4, 0.0)
    lm = rows.loc[("lm", "domain", pd.NA, "rs", "rs", "exact_match")]
    assert lm.value == 0.25 and lm.delta == -0.5 and -1 <= lm.delta_low <= -0.5 <= lm.delta_high <= 0
    assert lm.ci_low <= 0.25 <= lm.ci_high
    assert rows.loc[("lm", "domain", pd.NA, "rs", "rs", LOGLIK)].delta == pytest.approx(-1.0)  # -3 against -2
    assert rows.loc[("lm", "domain", pd.NA, "med", "rs", "exact_match")].delta == 0.25
    assert rows.loc[("none", "domain", pd.NA, "com", "com", "vqa_accuracy")].value == pytest.approx(0.9)

    summary = summarize_random(everything)  # the random controls are DAPE's: margin's own change is not theirs
    assert list(summary.columns[:6]) == ["model", "condition", "source_domain", "domain", "subset", "metric"]
    summary = summary.set_index("metric")
    accuracy = summary.loc["exact_match"]
    assert accuracy.seeds == 2 and accuracy.value_mean == 0.625 and accuracy.value_min == 0.5
    assert accuracy.value_std == pytest.approx(math.sqrt(2 * 0.125**2))
    assert (accuracy.delta_min, accuracy.delta_max, accuracy.own_delta) == (-0.25, 0.0, -0.5)
    assert accuracy.p_empirical == pytest.approx(1 / 3)
    assert summary.loc[LOGLIK].delta_min == -0.25 and summary.loc[LOGLIK].p_empirical == pytest.approx(1 / 3)


def test_scoring_errors_name_the_file(tmp_path):
    good = _run_file(tmp_path, "none", ["yes", "no", "2", "blue"])
    with pytest.raises(AblationError, match="no metric configured for domain 'rs'"):
        score_runs(load_runs([good]), {"com": "vqa_accuracy"})
    with pytest.raises(AblationError, match="same run"):
        load_runs([good, good])
    mixed = tmp_path / "mixed.jsonl"
    lines = good.read_text().splitlines()
    mixed.write_text(lines[0] + "\n" + lines[1].replace('"rs"', '"com"') + "\n")
    with pytest.raises(AblationError, match="mixed.jsonl: records of 2 different runs"):
        load_runs([mixed])
    broken = tmp_path / "broken.jsonl"
    broken.write_text(lines[0] + "\n{oops\n")
    with pytest.raises(AblationError, match="broken.jsonl, line 2"):
        read_answers(broken)
    with pytest.raises(AblationError, match="lingo_judge.*no judge"):
        score_runs(load_runs([good]), {"rs": "lingo_judge"})


# --- per-question-type rows ---------------------------------------------------------------------------------

TYPED_REFS = {"s0": ["2"], "s1": ["3"], "s2": ["yes"], "s3": ["no"]}
TYPES = [{"question_type": t} for t in ("count", "count", "presence", "presence")]


def _typed_runs(tmp_path):
    return [
        _run_file(tmp_path, "none", ["2", "3", "yes", "yes"], refs=TYPED_REFS, metas=TYPES, logliks=[-1, -2, -3, -4]),
        _run_file(tmp_path, "lm", ["1", "3", "yes", "no"], refs=TYPED_REFS, metas=TYPES, logliks=[-2, -2, -3, -5]),
        _run_file(tmp_path, "lm", ["2", "1", "no", "no"], seed=1, refs=TYPED_REFS, metas=TYPES),
        _run_file(tmp_path, "lm", ["2", "3", "yes", "yes"], seed=2, refs=TYPED_REFS, metas=TYPES),
        _run_file(tmp_path, "none", ["two"], domain="com", refs={"c0": ["2"] * 10}),
    ]


def test_per_question_type_rows_by_hand(tmp_path):
    runs = load_runs(_typed_runs(tmp_path))
    metrics = {"rs": "exact_match", "com": "vqa_accuracy"}
    table = score_runs(runs, metrics, n_boot=200, breakdown={"rs": "question_type"})
    # Correct per sample (s0..s3; s0, s1 count, s2, s3 presence): none 1 1 1 0, lm 0 1 1 1,
    # seed 1: 1 0 0 1, seed 2: 1 1 1 0.
    own = table[(table["control"] == "domain") & (table["domain"] == "rs") & (table["metric"] == "exact_match")]
    got = {(r.condition, r.subset): (r.value, r.n, r.delta) for r in own.itertuples()}
    assert got == {
        ("none", "all"): (0.75, 4, 0.0),
        ("none", "question_type=count"): (1.0, 2, 0.0),
        ("none", "question_type=presence"): (0.5, 2, 0.0),
        ("lm", "all"): (0.75, 4, 0.0),
        ("lm", "question_type=count"): (0.5, 2, -0.5),  # (0 + 1) / 2 against (1 + 1) / 2
        ("lm", "question_type=presence"): (1.0, 2, 0.5),
    }
    count = own[(own["condition"] == "lm") & (own["subset"] == "question_type=count")].iloc[0]
    assert -1.0 <= count.delta_low <= -0.5 <= count.delta_high <= 0.0  # differences -1 and 0
    assert 0.0 <= count.ci_low <= 0.5 <= count.ci_high <= 1.0
    loglik = table[(table["condition"] == "lm") & (table["metric"] == LOGLIK)].set_index("subset")["delta"]
    assert loglik.to_dict() == {"all": -0.5, "question_type=count": -0.5, "question_type=presence": -0.5}
    assert set(table.loc[table["domain"] == "com", "subset"]) == {"all"}  # no breakdown for com
    # Without the breakdown the whole-domain rows are the same.
    plain = score_runs(runs, metrics, n_boot=200)
    pd.testing.assert_frame_equal(plain, table[table["subset"] == "all"].reset_index(drop=True))

    summary = summarize_random(table)
    summary = summary[summary["metric"] == "exact_match"].set_index("subset")
    # Random seeds' changes: count -0.5 and 0, presence 0 and 0, all -0.25 and 0.
    assert (summary.loc["question_type=count", ["delta_min", "delta_max", "own_delta"]] == [-0.5, 0.0, -0.5]).all()
    assert summary.loc["question_type=count"].p_empirical == pytest.approx(2 / 3)  # (1 + 1) / (1 + 2)
    assert summary.loc["question_type=presence"].p_empirical == pytest.approx(1.0)
    assert summary.loc["question_type=presence"].value_mean == 0.5
    assert (summary.loc["all", ["delta_min", "delta_max", "seeds"]] == [-0.25, 0.0, 2]).all()


def test_breakdown_needs_the_meta_key_in_every_record(tmp_path):
    metas = [*TYPES[:2], {"source": "x"}, TYPES[3]]
    files = [_run_file(tmp_path, "none", ["2", "3", "yes", "yes"], refs=TYPED_REFS, metas=metas)]
    with pytest.raises(AblationError, match=r"m/none/rs, sample s2: .*meta key 'question_type'"):
        score_runs(load_runs(files), {"rs": "exact_match"}, breakdown={"rs": "question_type"})
    plain = _run_file(tmp_path, "lm", ["2", "3", "yes", "yes"], refs=TYPED_REFS)  # no meta at all
    with pytest.raises(AblationError, match="sample s0: .*meta key 'question_type'"):
        score_runs(load_runs([plain]), {"rs": "exact_match"}, breakdown={"rs": "question_type"})


def test_the_figures_plot_whole_domains_and_a_per_type_figure(tmp_path):
    runs = load_runs(_typed_runs(tmp_path))
    table = score_runs(runs, {"rs": "exact_match", "com": "vqa_accuracy"}, n_boot=50, breakdown={"rs": "question_type"})
    paths = plot_all(table, summarize_random(table), tmp_path / "figures")
    names = {path.name for path in paths}
    assert {"m_ablation_scores.png", "m_ablation_loglik.png"} <= names
    assert "m_ablation_scores_rs_subsets.png" in names
    assert all(path.stat().st_size > 0 for path in paths)


def test_the_domain_heatmap_shows_whole_domain_changes(tmp_path, monkeypatch):
    runs = load_runs(_typed_runs(tmp_path))
    table = score_runs(runs, {"rs": "exact_match", "com": "vqa_accuracy"}, n_boot=50, breakdown={"rs": "question_type"})
    drawn = []
    draw = ablation_plots._draw
    monkeypatch.setattr(
        ablation_plots, "_draw", lambda ax, matrix, *rest: drawn.append(matrix) or draw(ax, matrix, *rest)
    )
    ablation_plots.plot_effects(table, summarize_random(table), "m", tmp_path / "scores")
    ablation_plots.plot_subsets(table, summarize_random(table), "m", "rs", tmp_path / "subsets")
    scores, subsets = drawn
    assert scores.tolist() == [[0.0, pytest.approx(float("nan"), nan_ok=True)]]  # lm: rs all 0, com not run
    assert subsets.tolist() == [[0.0, -0.5, 0.5]]  # lm: all, count, presence


# --- option letters from each sample's options ----------------------------------------------------------------

OPTION_REFS = {"p0": ["B"], "p1": ["E: none of these"], "p2": ["C"], "p3": ["A"]}
OPTION_METAS = [
    {"options": ["liver", "lung", "heart", "kidney"]},
    {"options": {"A": "x", "B": "y", "C": "z", "D": "w", "E": "none of these"}},
    {"options": ["liver", "lung", "heart"]},
    {},  # no options: A-D
]
OPTION_PREDICTIONS = ["E. coli, so the answer is B", "E", "C", "A"]


def test_option_letters_come_from_each_record_meta(tmp_path):
    files = [_run_file(tmp_path, "none", OPTION_PREDICTIONS, domain="med", refs=OPTION_REFS, metas=OPTION_METAS)]
    runs = load_runs(files)
    table = score_runs(runs, {"med": "option_accuracy"}, n_boot=10).set_index("metric")
    assert table.loc["option_accuracy"].value == 1.0  # p0: B, not E; p1: E is an option
    compat = score_runs(runs, {"med": "option_accuracy_compat"}, n_boot=10).set_index("metric")
    # Characters equal to the reference letter: p0 "B" once, p1 "E" once, p2 "C" once, p3 "A" once.
    assert compat.loc["option_accuracy_compat"].value == 1.0


def test_a_reference_letter_outside_the_sample_options_names_the_sample(tmp_path):
    refs = {**OPTION_REFS, "p2": ["D"]}  # p2 has three options, A-C
    files = [_run_file(tmp_path, "none", OPTION_PREDICTIONS, domain="med", refs=refs, metas=OPTION_METAS)]
    for metric in ("option_accuracy", "option_accuracy_compat"):
        with pytest.raises(MetricError, match=r"m/none/med, sample p2: .*'D'.*not one of the options ABC"):
            score_runs(load_runs(files), {"med": metric}, n_boot=10)


# --- data errors are user errors ----------------------------------------------------------------------------


def test_data_errors_are_user_errors(tmp_path):
    good = _run_file(tmp_path, "none", ["yes", "no", "2", "blue"])
    with pytest.raises(MetricError, match="domain rs: unknown metric 'bleu'"):
        score_runs(load_runs([good]), {"rs": "bleu"})
    letterless = _run_file(tmp_path, "lm", ["yes", "no", "2", "blue"])
    with pytest.raises(MetricError, match="m/lm/rs, sample s0: reference answer 'yes' holds no option letter"):
        score_runs(load_runs([letterless]), {"rs": "option_accuracy"})
    fewer = _run_file(tmp_path, "all", ["yes", "no", "2"], refs=dict(list(REFS.items())[:3]))
    with pytest.raises(EffectError, match="different samples"):
        score_runs(load_runs([good, fewer]), {"rs": "exact_match"})
    for error in (MetricError, EffectError):
        assert issubclass(error, MmneuronError) and not issubclass(error, ValueError)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("prediction"), r"record 2 lacks the field 'prediction'"),
        (lambda r: r.update(sample_id="s0"), "sample s0 appears twice"),
        (lambda r: r.update(references=[]), "sample s1: no reference answers"),
        (lambda r: r.update(references="no"), "sample s1: references must be a list of strings"),
        (lambda r: r.update(prediction=None), "sample s1: the prediction is None, not a string"),
        (lambda r: r.update(meta=["x"]), "sample s1: meta must be a JSON object"),
    ],
)
def test_unusable_records_name_the_file(tmp_path, change, message):
    path = _run_file(tmp_path, "none", ["yes", "no", "2", "blue"])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    change(records[1])
    write_answers(records, path)
    with pytest.raises(AblationError, match=f"{path.name}.*{message}"):
        load_runs([path])


def test_a_non_numeric_log_likelihood_names_the_sample(tmp_path):
    path = _run_file(tmp_path, "none", ["yes", "no", "2", "blue"], logliks=[-1.0, "-2", -1.0, -1.0])
    with pytest.raises(AblationError, match=r"m/none/rs, sample s1: reference_loglik is '-2', not a number"):
        score_runs(load_runs([path]), {"rs": "exact_match"})


def test_method_runs_get_their_own_figure_and_leave_dapes_alone(tmp_path, monkeypatch):
    files = [
        _run_file(tmp_path, "none", ["yes", "no", "2", "red"], logliks=[-1, -1, -1, -1]),
        _run_file(tmp_path, "lm", ["yes", "no", "2", "blue"], logliks=[-2, -1, -1, -1]),  # DAPE: -0.25
        _run_file(tmp_path, "lm", ["no", "no", "1", "blue"], method="margin", logliks=[-3, -1, -1, -1]),  # -0.75
        _run_file(tmp_path, "lm", ["yes", "no", "2", "red"], seed=1, logliks=[-1, -1, -1, -1]),
    ]
    table = score_runs(load_runs(files), {"rs": "exact_match"}, n_boot=50)
    drawn = []
    draw = ablation_plots._draw
    monkeypatch.setattr(
        ablation_plots, "_draw", lambda ax, matrix, *rest: drawn.append(matrix) or draw(ax, matrix, *rest)
    )
    paths = plot_all(table, summarize_random(table), tmp_path / "figures")
    assert drawn[0].tolist() == [[-0.25]]  # the condition heatmap shows DAPE's sets, not margin's
    names = {path.name for path in paths}
    assert {"m_methods_scores.png", "m_methods_loglik.png", "m_ablation_scores.png"} <= names


def test_flip_rate_counts_changed_answers_against_none_by_hand(tmp_path):
    files = [
        _run_file(tmp_path, "none", ["yes", "no", "2", "red"], logliks=[-1.0] * 4),
        # s1 only changes case and spacing (the same answer); s2 and s3 change: 2 of 4
        _run_file(tmp_path, "lm", ["yes", " NO ", "3", "blue"], logliks=[-1.0] * 4),
        _run_file(tmp_path, "lm", ["no", "no", "2", "red"], seed=1, logliks=[-1.0] * 4),  # 1 of 4
    ]
    table = score_runs(load_runs(files), {"rs": "exact_match"}, n_boot=50)
    answers = table[table["metric"] == "exact_match"].set_index(["condition", "control"])
    assert answers.loc[("none", "domain"), "flip_rate"] == 0.0
    assert answers.loc[("lm", "domain"), "flip_rate"] == 0.5
    assert answers.loc[("lm", "random"), "flip_rate"] == 0.25
    # Wilson's interval for 2 of 4 at 95%, by hand: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    z = 1.959964
    centre, half = (0.5 + z**2 / 8) / (1 + z**2 / 4), z * math.sqrt(0.25 / 4 + z**2 / 64) / (1 + z**2 / 4)
    assert answers.loc[("lm", "domain"), "flip_low"] == pytest.approx(centre - half)
    assert answers.loc[("lm", "domain"), "flip_high"] == pytest.approx(centre + half)
    assert table.loc[table["metric"] == LOGLIK, "flip_rate"].isna().all()  # no answers to flip there


def test_flip_rate_is_missing_without_none(tmp_path):
    table = score_runs(load_runs([_run_file(tmp_path, "lm", ["yes", "no", "2", "red"])]), {"rs": "exact_match"})
    assert table["flip_rate"].isna().all()
