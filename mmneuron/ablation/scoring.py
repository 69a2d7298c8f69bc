"""Score answers files: the tidy score table with effect sizes, and the random controls' distribution.

Each answers file is one run (model, condition, control, seed, source domain, domain, and the
selection method of its neuron sets: ``dape`` for answers without one). Every
sample is scored with its domain's metric (``mmneuron.vqa.metrics`` by name, or ``lingo_judge``);
when the records carry it, the reference answer's mean log-likelihood is a second metric,
``reference_loglik``. The option metrics take the letters of each sample's ``meta["options"]``.
:func:`mmneuron.vqa.effects.score_table` then gives the mean with its bootstrap interval and the
paired change against ``none`` on the same samples, for the whole domain (subset ``all``) and, where
asked, per value of a meta key (RSVQA's ``question_type``). Data that cannot be scored raises a user
error (:class:`AblationError`, :class:`~mmneuron.vqa.metrics.MetricError`,
:class:`~mmneuron.vqa.effects.EffectError`) naming the file or the run and sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmneuron.ablation.answers import AblationError, read_answers
from mmneuron.conditions import OWN, RANDOM
from mmneuron.defaults import LINGO_JUDGE
from mmneuron.selection import METHOD as DAPE
from mmneuron.vqa.effects import ALL, BASELINE, SCORE_COLUMNS, score_table, summarize_random_controls, wilson_interval
from mmneuron.vqa.metrics import OPTION_METRICS, MetricError, get_metric, option_letters

LOGLIK = "reference_loglik"
RUN_FIELDS = ("model", "condition", "control", "seed", "source_domain", "domain")
RECORD_FIELDS = (*RUN_FIELDS, "sample_id", "question", "prediction", "references")
# The share of answers that changed against `none` on the same samples, with its Wilson interval (answer
# metrics' rows; NaN for the log-likelihood and where `none` was not run).
FLIP_COLUMNS = ("flip_rate", "flip_low", "flip_high")
# the selection method beside the model (answers written before the bake-off are DAPE's)
TABLE_COLUMNS = ("model", "method", *RUN_FIELDS[1:], *SCORE_COLUMNS[3:], *FLIP_COLUMNS)
RANDOM_COLUMNS = (
    "model",
    "condition",
    "source_domain",
    "domain",
    "subset",
    "metric",
    "seeds",
    "value_mean",
    "value_std",
    "value_min",
    "value_max",
    "delta_mean",
    "delta_std",
    "delta_min",
    "delta_max",
    "own_delta",
    "p_empirical",
)


@dataclass(frozen=True)
class Run:
    model: str
    condition: str
    control: str
    seed: int | None
    source_domain: str
    domain: str
    method: str = DAPE  # the selector of the neuron sets

    @property
    def label(self) -> str:
        """A condition name unique per run of a model and domain, for the score table's keys
        (``none`` is every method's baseline: it deactivates nothing)."""
        method = "" if self.method == DAPE else f"{self.method}:"
        if self.control == RANDOM:
            return f"{method}{self.condition}~random{self.seed}~from:{self.source_domain}"
        if self.source_domain != self.domain:
            return f"{method}{self.condition}~from:{self.source_domain}"
        return f"{method}{self.condition}"


def _check_record(path: Path, number: int, record: dict) -> None:
    for field in RECORD_FIELDS:
        if field not in record:
            raise AblationError(f"{path}: record {number} lacks the field {field!r}")
    where = f"{path}, sample {record['sample_id']}"
    references = record["references"]
    if not references:
        raise AblationError(f"{where}: no reference answers")
    if not isinstance(references, list) or not all(isinstance(answer, str) for answer in references):
        raise AblationError(f"{where}: references must be a list of strings, got {references!r:.80}")
    if not isinstance(record["prediction"], str):
        raise AblationError(f"{where}: the prediction is {record['prediction']!r:.80}, not a string")
    if not isinstance(record.get("meta", {}), dict):
        raise AblationError(f"{where}: meta must be a JSON object, got {record['meta']!r:.80}")


def _check_records(path: Path, records: list[dict]) -> None:
    seen = set()
    for number, record in enumerate(records, start=1):
        _check_record(path, number, record)
        if record["sample_id"] in seen:
            raise AblationError(f"{path}: sample {record['sample_id']} appears twice")
        seen.add(record["sample_id"])


def load_runs(paths: Sequence[str | Path]) -> dict[Run, list[dict]]:
    """The records of each file, keyed by run; files that mix runs or repeat one, and records that
    cannot be scored (a field missing, no references, a sample twice), raise naming the file."""
    runs: dict[Run, list[dict]] = {}
    where: dict[Run, Path] = {}
    for path in map(Path, paths):
        records = read_answers(path)
        if not records:
            raise AblationError(f"{path}: no answers")
        _check_records(path, records)
        found = {Run(*(record[field] for field in RUN_FIELDS), record.get("method", DAPE)) for record in records}
        if len(found) != 1:
            raise AblationError(f"{path}: records of {len(found)} different runs, expected one per file")
        run = found.pop()
        if run.control not in (OWN, RANDOM):
            raise AblationError(f"{path}: unknown control {run.control!r}")
        if run in runs:
            raise AblationError(f"{path} and {where[run]} hold the same run ({run})")
        runs[run], where[run] = records, path
    return runs


def _where(run: Run) -> str:
    return f"{run.model}/{run.label}/{run.domain}"


def _options(record: dict, metric: str) -> dict[str, str]:
    """``letters=`` for the option metrics: the letters of this sample's own options."""
    if metric not in OPTION_METRICS:
        return {}
    return {"letters": option_letters(record.get("meta", {}).get("options"))}


def _metric_scores(run: Run, records: list[dict], metric: str) -> dict[str, float]:
    try:
        function = get_metric(metric)
    except MetricError as error:
        raise MetricError(f"domain {run.domain}: {error}") from None
    scores = {}
    for record in records:
        try:
            options = _options(record, metric)
            scores[record["sample_id"]] = function(record["prediction"], record["references"], **options)
        except MetricError as error:
            raise MetricError(f"{_where(run)}, sample {record['sample_id']}: {error}") from None
    return scores


def _sample_scores(run: Run, records: list[dict], metric: str, judge) -> dict[str, float]:
    if metric != LINGO_JUDGE:
        return _metric_scores(run, records, metric)
    if judge is None:
        raise AblationError(f"domain {run.domain} is scored by {LINGO_JUDGE}, but no judge was given")
    correct = judge.score(
        [r["question"] for r in records], [r["references"] for r in records], [r["prediction"] for r in records]
    )
    return {record["sample_id"]: float(value) for record, value in zip(records, correct)}


def _logliks(run: Run, records: list[dict]) -> dict[str, float] | None:
    """The reference answers' log-likelihoods, or None when a record lacks one."""
    logliks = {record["sample_id"]: record.get(LOGLIK) for record in records}
    if any(value is None for value in logliks.values()):
        return None
    for sample_id, value in logliks.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AblationError(f"{_where(run)}, sample {sample_id}: {LOGLIK} is {value!r:.40}, not a number")
    return logliks


def _subsets(run: Run, records: list[dict], key: str | None) -> dict[str, list[str]]:
    """Sample ids of the whole domain (``all``) and, when ``key`` is given, of each value of that
    meta key (``"question_type=count"``), in sorted order."""
    subsets = {ALL: [record["sample_id"] for record in records]}
    if key is None:
        return subsets
    groups: dict[str, list[str]] = {}
    for record in records:
        value = record.get("meta", {}).get(key)
        if value is None:
            raise AblationError(
                f"{_where(run)}, sample {record['sample_id']}: no meta key {key!r} for the rows per {key}"
            )
        groups.setdefault(f"{key}={value}", []).append(record["sample_id"])
    return subsets | dict(sorted(groups.items()))


def score_runs(
    runs: Mapping[Run, list[dict]],
    metrics: Mapping[str, str],
    judge=None,
    n_boot: int = 1000,
    seed: int = 0,
    breakdown: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The tidy score table (columns :data:`TABLE_COLUMNS`): one row per run and metric with
    ``subset`` ``"all"``, and for a domain of ``breakdown`` (domain -> meta key, for example
    ``{"rs": "question_type"}``) one row more per value of that key (``"question_type=count"``),
    compared with ``none`` on the same samples."""
    breakdown = breakdown or {}
    scores, by_label = {}, {}
    for run, records in runs.items():
        if run.domain not in metrics:
            raise AblationError(f"no metric configured for domain {run.domain!r} (configured: {sorted(metrics)})")
        by_label[run.model, run.label, run.domain] = run
        metric = metrics[run.domain]
        per_metric = {metric: _sample_scores(run, records, metric, judge)}
        logliks = _logliks(run, records)
        if logliks is not None:
            per_metric[LOGLIK] = logliks
        subsets = _subsets(run, records, breakdown.get(run.domain))
        for name, values in per_metric.items():
            for subset, ids in subsets.items():
                scores[run.model, run.label, run.domain, subset, name] = {i: values[i] for i in ids}
    table = score_table(scores, n_boot=n_boot, seed=seed)
    runs_of_rows = [
        by_label[model, label, domain]
        for model, label, domain in zip(table["model"], table["condition"], table["domain"])
    ]
    for field in (*RUN_FIELDS[1:5], "method"):
        table[field] = [getattr(run, field) for run in runs_of_rows]
    table["seed"] = table["seed"].astype("Int64")
    flips = [
        _flip_rate(runs, run, subset, breakdown.get(run.domain)) if metric != LOGLIK else (np.nan,) * 3
        for run, subset, metric in zip(runs_of_rows, table["subset"], table["metric"])
    ]
    table[list(FLIP_COLUMNS)] = pd.DataFrame(flips, index=table.index, dtype=float)
    return table[list(TABLE_COLUMNS)]


def _answer(text: str) -> str:
    # an answer "changes" when its words do, not its case or spacing
    return " ".join(text.lower().split())


def _flip_rate(runs: Mapping[Run, list[dict]], run: Run, subset: str, key: str | None) -> tuple[float, ...]:
    """The share of ``run``'s answers in ``subset`` that differ from the same samples' answers under
    ``none`` (of the same model and domain), with its Wilson interval; NaN when ``none`` was not run."""
    baseline = Run(run.model, BASELINE, OWN, None, run.domain, run.domain)
    if baseline not in runs:
        return (np.nan,) * 3
    before = {record["sample_id"]: _answer(record["prediction"]) for record in runs[baseline]}
    records = {record["sample_id"]: record for record in runs[run]}
    ids = _subsets(run, runs[run], key)[subset]
    missing = [sample for sample in ids if sample not in before]
    if missing:
        raise AblationError(f"{_where(run)}: sample {missing[0]} has no answer under {BASELINE} to compare with")
    changed = sum(_answer(records[sample]["prediction"]) != before[sample] for sample in ids)
    return wilson_interval(changed, len(ids))


def summarize_random(table: pd.DataFrame) -> pd.DataFrame:
    """Per (model, condition, source, domain, subset, metric): the random controls' values and
    changes as a distribution over seeds, the own set's change, and the empirical one-sided p-value
    ``(1 + #seeds whose change <= own change) / (1 + #seeds)`` (small: the own set hurts more)."""
    keys = ["model", "condition", "source_domain", "domain", "subset", "metric"]
    random = table[table["control"] == RANDOM]
    own = table[(table["control"] == OWN) & (table["method"] == DAPE)].set_index(keys)["delta"]  # the controls' sets
    rows = []
    for key, group in random.groupby(keys, sort=False):
        values = summarize_random_controls(group["value"].to_numpy())
        deltas = group["delta"].to_numpy(dtype=float)
        delta = summarize_random_controls(deltas) if np.isfinite(deltas).all() else dict.fromkeys(values, np.nan)
        own_delta = float(own.get(key, np.nan))
        p = (1 + int((deltas <= own_delta).sum())) / (1 + len(deltas)) if np.isfinite(own_delta) else np.nan
        rows.append(
            (
                *key,
                values["n"],
                values["mean"],
                values["std"],
                values["min"],
                values["max"],
                delta["mean"],
                delta["std"],
                delta["min"],
                delta["max"],
                own_delta,
                p,
            )
        )
    return pd.DataFrame(rows, columns=list(RANDOM_COLUMNS))
