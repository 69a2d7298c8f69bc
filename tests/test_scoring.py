"""Scoring answers files: option letters, user errors."""

from __future__ import annotations

import json

import pytest

from mmneuron.ablation.run import AblationError, write_answers
from mmneuron.ablation.scoring import load_runs, score_runs
from mmneuron.errors import MmneuronError
from mmneuron.vqa.effects import EffectError
from mmneuron.vqa.metrics import MetricError

REFS = {"s0": ["yes"], "s1": ["no"], "s2": ["2"], "s3": ["red"]}


def _run_file(
    tmp_path, condition, predictions, seed=None, source=None, domain="rs", logliks=None, refs=REFS, metas=None
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
        }
        for i, (sid, pred) in enumerate(zip(refs, predictions))
    ]
    name = f"{condition}_{seed}_{source}_{domain}.jsonl"
    return write_answers(records, tmp_path / name)


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
