"""folder: a folder of images and a JSONL or CSV file of questions, for a domain of one's own.

Each row has ``image`` (a path relative to ``--root``), ``question``, ``answer`` (one reference)
or ``answers`` (a list; in a CSV a JSON list or one string), optionally ``options`` (a list; in a
CSV a JSON list) and ``sample_id`` (default ``row{N}``, N counted from 1); any other column goes
into the sample's meta. One question per row; ``--one-per-image`` keeps one question per image.
The same file serves either split: give each split its own file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .base import Candidate, Skip, SourceError, require, source_file

DOMAIN = None  # the user names it with --domain
LICENCE = "Your own data: its terms are yours to state and keep."
KNOWN = ("sample_id", "image", "question", "answer", "answers", "options")


def add_arguments(group) -> None:
    group.add_argument("--root", required=True, type=Path, help="folder the images' paths are relative to")
    group.add_argument("--questions", required=True, type=Path, help="JSONL or CSV file of questions (one per row)")
    group.add_argument("--one-per-image", action="store_true", help="keep one question per image")


def candidates(args, split: str):
    root = require(args.root, "image folder (--root)", "give the folder the rows' image paths are relative to")
    path = require(args.questions, "questions file (--questions)", "give a JSONL or CSV file")
    yield source_file(path)
    seen: set[str] = set()
    for number, row in _rows(path):
        sample_id = str(row.get("sample_id") or f"row{number}") if isinstance(row, dict) else f"row{number}"
        try:
            candidate = _candidate(root, row, sample_id, csv_row=path.suffix.lower() == ".csv")
        except ValueError as error:
            yield Skip(sample_id, f"{path.name} row {number}: {error}")
            continue
        if sample_id in seen:
            yield Skip(sample_id, f"{path.name} row {number}: sample_id {sample_id!r} used before")
            continue
        seen.add(sample_id)
        yield candidate


def _rows(path: Path):
    """(row number, row) pairs; a JSONL line that is not a JSON object comes as a string."""
    suffix = path.suffix.lower()
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            if suffix == ".csv":
                yield from enumerate(csv.DictReader(handle), start=1)
            elif suffix in (".jsonl", ".ndjson", ".json"):
                for number, line in enumerate((line for line in handle if line.strip()), start=1):
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as error:
                        row = f"not JSON ({error.msg})"
                    yield number, row if isinstance(row, (dict, str)) else "not a JSON object"
            else:
                raise SourceError(f"{path}: questions must be a .jsonl or .csv file")
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 text") from None


def _candidate(root: Path, row, sample_id: str, csv_row: bool) -> Candidate:
    if isinstance(row, str):
        raise ValueError(row)
    image, question = row.get("image"), row.get("question")
    if not isinstance(image, str) or not image.strip():
        raise ValueError("no image path")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("no question")
    answers = _answers(row, csv_row)
    meta = {key: value for key, value in row.items() if key not in KNOWN and value not in (None, "")}
    if row.get("options") not in (None, ""):
        meta["options"] = _options(row["options"], csv_row)
    meta["image"] = image
    file = root / image
    return Candidate(sample_id, question.strip(), answers, file.read_bytes, meta, image_key=image)


def _answers(row: dict, csv_row: bool) -> list[str]:
    if row.get("answers") not in (None, ""):
        value = row["answers"]
        if csv_row and isinstance(value, str) and value.lstrip().startswith("["):
            value = _json(value, "answers")
        values = [value] if isinstance(value, str) else value
    elif row.get("answer") not in (None, ""):
        values = [row["answer"]]
    else:
        raise ValueError("no answer or answers")
    if not isinstance(values, list) or not values or not all(isinstance(v, (str, int, float)) for v in values):
        raise ValueError(f"answers must be a non-empty list of strings, got {values!r:.60}")
    return [str(value) for value in values]


def _options(value, csv_row: bool) -> list[str]:
    if csv_row and isinstance(value, str):
        value = _json(value, "options")
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"options must be a non-empty list of strings, got {value!r:.60}")
    return value


def _json(text: str, column: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{column} is not a JSON list: {text!r:.60}") from None
