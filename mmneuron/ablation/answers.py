"""Answers files: one JSONL record per sample and run, and their gathering from shards.

An ablation job writes one file of records for a group of runs (conditions and controls) over a
shard of one domain's samples; :func:`gather_answers` turns the shards of every group into one
file per run, ``{condition}/{variant}.jsonl`` (``mmneuron.conditions.Condition.run``), holding
exactly what one job over all the samples would have written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from mmneuron.conditions import Condition
from mmneuron.errors import MmneuronError


class AblationError(MmneuronError):
    """Inputs an ablation run cannot use; the message names the file, sample or key."""


def write_answers(records: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    return path


def read_answers(path: str | Path) -> list[dict]:
    """The records of one answers file; a line that is not a JSON object raises, naming the line."""
    path = Path(path)
    if not path.exists():
        raise AblationError(f"answers file not found: {path}")
    records = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise AblationError(f"{path}, line {number}: not JSON ({error})") from None
            if not isinstance(record, dict):
                raise AblationError(f"{path}, line {number}: expected a JSON object")
            records.append(record)
    return records


def run_of(record: dict) -> str:
    """The run name of a record (``lm/own``, ``all/random1``, ``all/from_rs``)."""
    source = record["source_domain"] if record["source_domain"] != record["domain"] else None
    return Condition(record["condition"], record["seed"], source).run


def gather_answers(paths: Sequence[str | Path]) -> dict[tuple[str, str], list[dict]]:
    """The records of shard files, by (domain, run), each run's records in the order of ``paths``
    (shards in order give the order of one job). A sample of a run in two files, or runs of one
    domain over different samples, raise naming the files."""
    runs: dict[tuple[str, str], list[dict]] = {}
    where: dict[tuple[str, str], dict[str, Path]] = {}  # per run: sample id -> its file
    for path in map(Path, paths):
        for number, record in enumerate(read_answers(path), start=1):
            try:
                key = (record["domain"], run_of(record))
            except KeyError as error:
                raise AblationError(f"{path}: record {number} lacks the field {error}") from None
            files = where.setdefault(key, {})
            if record["sample_id"] in files:
                raise AblationError(
                    f"sample {record['sample_id']} of run {key[1]} is in both {files[record['sample_id']]} and {path}"
                )
            files[record["sample_id"]] = path
            runs.setdefault(key, []).append(record)
    by_domain: dict[str, set[frozenset]] = {}
    for (domain, _), files in where.items():
        by_domain.setdefault(domain, set()).add(frozenset(files))
    uneven = [domain for domain, sets in by_domain.items() if len(sets) > 1]
    if uneven:
        raise AblationError(f"the runs of domain {uneven[0]} hold different samples in {[str(p) for p in paths]}")
    return runs


def write_runs(runs: dict[tuple[str, str], list[dict]], folder: str | Path) -> list[Path]:
    """One answers file per run under ``folder``: ``{condition}/{variant}.jsonl``."""
    return [write_answers(records, Path(folder) / f"{run}.jsonl") for (_, run), records in sorted(runs.items())]
