"""docvqa: DocVQA single-page questions, from the parquet mirror the authors used or the official JSON.

Two layouts:

- ``--mirror``: the parquet files of ``pixparse/docvqa-single-page-questions`` (columns ``image``
  {bytes, path}, ``question_id``, ``question``, ``answers`` list, ``other_metadata`` struct with
  the page file name ``image``, ``ucsf_document_id``, ``ucsf_document_page_no``, ...): one
  parquet file, a folder holding ``{split}-*.parquet`` (also under ``data/``), or the same on the
  hub as ``hf://datasets/pixparse/docvqa-single-page-questions`` (read through ``fsspec`` range
  requests: the text columns first, then only the drawn rows' images).
- ``--questions``: the official ``{train,val}_v1.0_withQT.json`` (``data`` list of ``questionId``,
  ``question``, ``image`` "documents/x.png", ``docId``, ``answers``, ``question_types``, ...) with
  the page images under ``--root`` (default: the JSON's folder).

stats = train, eval = validation (the test split has no answers). One question per page image,
as the authors did.
"""

from __future__ import annotations

import json
import posixpath
from functools import partial
from pathlib import Path

from . import parquet_mirror
from .base import Candidate, Skip, SourceError, SourceFile, require, source_file

DOMAIN = "doc"
SPLITS = {"stats": "train", "eval": "validation"}
ONE_PER_IMAGE = True
LICENCE = (
    "DocVQA (docvqa.org, RRC portal, free registration): no open licence is stated; the page images "
    "come from the UCSF Industry Documents Library. Research use only; do not re-host. Cite Mathew, "
    "Karatzas and Jawahar, 'DocVQA: A Dataset for VQA on Document Images', WACV 2021. The hub mirror "
    "pixparse/docvqa-single-page-questions labels itself MIT, an unofficial label."
)
REPOSITORY = "pixparse/docvqa-single-page-questions"
TEXT_COLUMNS = ["question_id", "question", "answers", "other_metadata"]
PAGE_META = ("ucsf_document_id", "ucsf_document_page_no", "doc_id", "docId", "question_types")


def add_arguments(group) -> None:
    group.add_argument(
        "--mirror",
        help="parquet file or folder in the pixparse/docvqa-single-page-questions layout, or an hf:// URL of it",
    )
    group.add_argument(
        "--questions", type=Path, help="official DocVQA JSON (train_v1.0_withQT.json, val_v1.0_withQT.json)"
    )
    group.add_argument(
        "--root", type=Path, help="folder the JSON's image paths are relative to (default: the JSON's folder)"
    )


def candidates(args, split: str):
    if bool(args.mirror) == bool(args.questions):
        raise SourceError("docvqa: give either --mirror (parquet) or --questions (official JSON)")
    if args.mirror:
        yield from _mirror(str(args.mirror), SPLITS[split])
    else:
        yield from _official(args.questions, args.root)


# --- the parquet mirror -----------------------------------------------------------------------


def _mirror(location: str, split: str):
    files = parquet_mirror.parquet_files(location, split, "docvqa", REPOSITORY)
    for item in parquet_mirror.text_rows(files, TEXT_COLUMNS, REPOSITORY):
        yield item if isinstance(item, SourceFile) else _mirror_row(*item)


def _mirror_row(file: str, group: int, index: int, row: dict) -> Candidate | Skip:
    sample_id = f"docvqa-{row.get('question_id')}"
    where = parquet_mirror.where(file, group, index)
    other = row.get("other_metadata") or {}
    page = other.get("image")
    problem = _problem(row.get("question"), row.get("answers"), page)
    if problem or row.get("question_id") is None:
        return Skip(sample_id, f"{where}: {problem or 'no question_id'}")
    meta = {"question_id": row["question_id"], "page": page, "file": posixpath.basename(file)}
    meta.update({key: other[key] for key in PAGE_META if other.get(key) is not None})
    load = partial(parquet_mirror.image_bytes, file, group, index)
    return Candidate(sample_id, row["question"].strip(), [str(a) for a in row["answers"]], load, meta, page)


# --- the official JSON ------------------------------------------------------------------------


def _official(questions: Path, root: Path | None):
    path = require(questions, "DocVQA questions (--questions)", "download it from https://rrc.cvc.uab.es/?ch=17")
    root = require(root or path.parent, "DocVQA image folder (--root)", "unpack the split's documents/ folder there")
    yield source_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise SourceError(f"{path}: not a DocVQA JSON with a 'data' list ({type(error).__name__})") from None
    for number, row in enumerate(data):
        if not isinstance(row, dict):
            yield Skip(f"docvqa-row{number}", f"{path.name} entry {number}: not an object")
            continue
        sample_id = f"docvqa-{row.get('questionId', f'row{number}')}"
        problem = _problem(row.get("question"), row.get("answers"), row.get("image"))
        if problem or row.get("questionId") is None:
            yield Skip(sample_id, f"{path.name} entry {number}: {problem or 'no questionId'}")
            continue
        meta = {"question_id": row["questionId"], "page": row["image"], "file": path.name}
        meta.update({key: row[key] for key in PAGE_META if row.get(key) is not None})
        load = (root / row["image"]).read_bytes
        yield Candidate(sample_id, row["question"].strip(), [str(a) for a in row["answers"]], load, meta, row["image"])


def _problem(question, answers, page) -> str | None:
    if not isinstance(question, str) or not question.strip():
        return "no question"
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        return "no answers"
    if not isinstance(page, str) or not page:
        return "no page image name"
    return None
