"""vqav2: VQAv2 with its COCO 2014 images, from the official JSON files or the lmms-lab parquet mirror.

Two layouts:

- ``--root``: the official ``v2_OpenEnded_mscoco_{split}2014_questions.json`` (``questions`` list
  of ``image_id``, ``question``, ``question_id``) and ``v2_mscoco_{split}2014_annotations.json``
  (``annotations`` list of ``question_id``, ``image_id``, ``question_type``, ``answer_type``,
  ``multiple_choice_answer``, ``answers`` [{``answer``, ``answer_confidence``, ``answer_id``}] x 10),
  extracted in ROOT or still inside the downloaded ``v2_Questions_{Train,Val}_mscoco.zip`` and
  ``v2_Annotations_{Train,Val}_mscoco.zip``; the images ``COCO_{split}2014_{image_id:012d}.jpg``
  from ``--images`` (a folder, or COCO's ``{split}2014.zip``, local or an http(s) URL: only the
  drawn members are read), by default ROOT/{split}2014/ or else ROOT/{split}2014.zip.
  ``--verify-images`` checks the COCO zip against the md5 LAVIS quotes (VQA publishes no checksums).
- ``--mirror``: the parquet files of ``lmms-lab/VQAv2`` (columns ``question_type``,
  ``multiple_choice_answer``, ``answers`` list of structs, ``image_id``, ``answer_type``,
  ``question_id``, ``question``, ``image`` {bytes, path}): one parquet file, a folder holding
  ``{split}-*.parquet`` (also under ``data/``), or an fsspec URL such as
  ``hf://datasets/lmms-lab/VQAv2`` (text columns first, then only the drawn rows' images). The
  mirror has no train split, so it serves eval (validation) only.

stats = train, eval = val. All 10 answers are kept, in the file's order, for the official VQA
accuracy. One question per image, as the authors did.
"""

from __future__ import annotations

import json
import posixpath
import zipfile
from functools import partial
from pathlib import Path

from . import parquet_mirror
from .base import Candidate, Skip, SourceError, SourceFile, open_zip, require, source_file, zip_names

DOMAIN = "com"
SPLITS = {"stats": "train", "eval": "val"}
MIRROR_SPLITS = {"train": "train", "val": "validation"}
ONE_PER_IMAGE = True
DOWNLOADS = "https://visualqa.org/download.html"
COCO = "http://images.cocodataset.org/zips"
# COCO 2014 image zips: md5 as quoted in Salesforce LAVIS's builders (COCO publishes none itself).
COCO_MD5 = {"train2014.zip": "0da8c0bd3d6becc4dcb32757491aca88", "val2014.zip": "a3d79f5ed8d289b7a7554ce06a5782b3"}
ANSWERS = 10
REPOSITORY = "lmms-lab/VQAv2"
TEXT_COLUMNS = [
    "question_id",
    "image_id",
    "question",
    "answers",
    "question_type",
    "answer_type",
    "multiple_choice_answer",
]
LICENCE = (
    "VQAv2 (visualqa.org): annotations CC BY 4.0 under the VQA Consortium's Terms of Use; the COCO "
    "images remain under the Flickr terms of use of their owners (the Consortium does not own them). "
    "Cite Goyal et al., 'Making the V in VQA Matter', CVPR 2017, and Lin et al., 'Microsoft COCO', "
    "ECCV 2014. The lmms-lab/VQAv2 mirror is tagged cc-by-4.0."
)


def add_arguments(group) -> None:
    group.add_argument(
        "--root",
        type=Path,
        help="folder with the official question and annotation JSON files (or their downloaded zips)",
    )
    group.add_argument(
        "--images",
        help="COCO 2014 images: the {split}2014 folder or {split}2014.zip, local or an http(s) URL "
        "(default: ROOT/{split}2014, else ROOT/{split}2014.zip)",
    )
    group.add_argument(
        "--verify-images",
        action="store_true",
        help="check a local COCO zip against its published md5 (reads the whole 6-13 GB file)",
    )
    group.add_argument("--mirror", help="parquet file or folder in the lmms-lab/VQAv2 layout, or an fsspec URL of it")


def candidates(args, split: str):
    if bool(args.mirror) == bool(args.root):
        raise SourceError("vqav2: give either --root (the official JSON files) or --mirror (parquet)")
    if args.mirror:
        yield from _mirror(str(args.mirror), MIRROR_SPLITS[SPLITS[split]])
    else:
        yield from _official(args, SPLITS[split])


# --- the official JSON files ------------------------------------------------------------------


def _official(args, split: str):
    root = require(args.root, "VQAv2 folder (--root)", f"download the question and annotation files from {DOWNLOADS}")
    title = split.capitalize()
    questions = yield from _load(
        root, f"v2_OpenEnded_mscoco_{split}2014_questions.json", f"v2_Questions_{title}_mscoco.zip", "questions"
    )
    annotations = yield from _load(
        root, f"v2_mscoco_{split}2014_annotations.json", f"v2_Annotations_{title}_mscoco.zip", "annotations"
    )
    images = yield from _images(root, args, split)
    by_id = {}
    for entry in annotations:
        if isinstance(entry, dict) and entry.get("question_id") is not None:
            by_id.setdefault(entry["question_id"], entry)
    for number, question in enumerate(questions):
        item = _official_row(number, question, by_id, split)
        if isinstance(item, Candidate):
            item.load_image = partial(images, item.meta["image"])
        yield item


def _load(root: Path, name: str, archive: str, key: str):
    """The ``key`` list of ROOT/name, or of the member ``name`` of ROOT/archive; yields the file read."""
    path = root / name
    if path.exists():
        yield source_file(path)
        where = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SourceError(f"{path}: not a VQAv2 JSON file ({type(error).__name__})") from None
    elif (root / archive).exists():
        yield source_file(root / archive)
        where = f"{root / archive}:{name}"
        with open_zip(root / archive) as zipped:
            member = zip_names(zipped).get(name)
            if member is None:
                raise SourceError(f"{root / archive}: holds no {name}")
            try:
                data = json.loads(zipped.read(member).decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile) as error:
                raise SourceError(f"{where}: not a VQAv2 JSON file ({type(error).__name__})") from None
    else:
        raise SourceError(f"VQAv2 file not found: {path} (nor {root / archive}; download it from {DOWNLOADS})")
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise SourceError(f"{where}: no {key!r} list; expected the official VQAv2 layout")
    return entries


def _official_row(number: int, question, annotations: dict, split: str) -> Candidate | Skip:
    if not isinstance(question, dict):
        return Skip(f"vqav2-row{number}", f"questions entry {number}: not an object")
    question_id = question.get("question_id")
    sample_id = f"vqav2-{question_id if question_id is not None else f'row{number}'}"
    where = f"questions entry {number}"
    annotation = annotations.get(question_id)
    if question_id is None:
        return Skip(sample_id, f"{where}: no question_id")
    if annotation is None:
        return Skip(sample_id, f"{where}: no annotation for question_id {question_id}")
    if annotation.get("image_id") != question.get("image_id"):
        return Skip(
            sample_id,
            f"{where}: image_id {question.get('image_id')} but its annotation has {annotation.get('image_id')}",
        )
    return _candidate(sample_id, where, {**annotation, **question}, split)


def _candidate(sample_id: str, where: str, row: dict, split: str) -> Candidate | Skip:
    """A candidate from a row holding the question's and its annotation's fields (the two layouts alike)."""
    text, image_id, answers = row.get("question"), row.get("image_id"), row.get("answers")
    if not isinstance(text, str) or not text.strip():
        return Skip(sample_id, f"{where}: no question")
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        return Skip(sample_id, f"{where}: image_id {image_id!r} is not a number")
    if (
        not isinstance(answers, list)
        or len(answers) != ANSWERS
        or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers)
    ):
        return Skip(sample_id, f"{where}: expected {ANSWERS} answers with an 'answer' string, got {answers!r:.80}")
    image = f"COCO_{split}2014_{image_id:012d}.jpg"
    meta = {"question_id": row["question_id"], "image_id": image_id, "image": image}
    for key in ("answer_type", "question_type", "multiple_choice_answer"):
        if row.get(key) is not None:
            meta[key] = row[key]
    meta["answer_confidence"] = [a.get("answer_confidence") for a in answers]
    return Candidate(sample_id, text.strip(), [a["answer"] for a in answers], _missing, meta, str(image_id))


def _missing(name: str = "") -> bytes:
    raise FileNotFoundError(f"image {name} not found")


def _images(root: Path, args, split: str):
    """A function image file name -> bytes over the folder or zip of COCO images; yields the zip read."""
    location = args.images
    if location is None:
        for path in (root / f"{split}2014", root / f"{split}2014.zip"):
            if path.exists():
                location = str(path)
                break
        else:
            raise SourceError(
                f"COCO {split}2014 images not found: {root}/{split}2014 or {root}/{split}2014.zip "
                f"(download {COCO}/{split}2014.zip or give --images)"
            )
    remote = location.startswith(("http://", "https://"))
    if not remote:
        path = require(
            Path(location), "COCO images (--images)", f"give the {split}2014 folder or {COCO}/{split}2014.zip"
        )
        if path.is_dir():
            return lambda name: (path / name).read_bytes()
        expected = COCO_MD5.get(path.name) if args.verify_images else None
        if args.verify_images and expected is None:
            raise SourceError(f"{path}: no published md5 for this file name (known: {', '.join(COCO_MD5)})")
        yield source_file(path, ("md5", expected) if expected else None)
    else:
        yield SourceFile(location)
    archive = open_zip(location)
    members = zip_names(archive)

    def read(name: str) -> bytes:
        member = members.get(name)
        if member is None:
            raise FileNotFoundError(f"{name} is not in {posixpath.basename(location)}")
        return archive.read(member)

    return read


# --- the parquet mirror -----------------------------------------------------------------------


def _mirror(location: str, split: str):
    hint = " (lmms-lab/VQAv2 has no train split: use --root for stats)" if split == "train" else ""
    files = parquet_mirror.parquet_files(location, split, "vqav2", REPOSITORY, hint)
    coco_split = "train" if split == "train" else "val"
    for item in parquet_mirror.text_rows(files, TEXT_COLUMNS, REPOSITORY):
        if isinstance(item, SourceFile):
            yield item
            continue
        file, group, index, row = item
        question_id = row.get("question_id")
        sample_id = f"vqav2-{question_id}"
        where = parquet_mirror.where(file, group, index)
        if question_id is None:
            yield Skip(sample_id, f"{where}: no question_id")
            continue
        candidate = _candidate(sample_id, where, row, coco_split)
        if isinstance(candidate, Candidate):
            candidate.meta["file"] = posixpath.basename(file)
            candidate.load_image = partial(parquet_mirror.image_bytes, file, group, index)
        yield candidate
