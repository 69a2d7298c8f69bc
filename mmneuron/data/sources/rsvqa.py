"""rsvqa: RSVQA high resolution (USGS), the Zenodo record 6344367: split JSONs and ``Images.tar``.

``--root`` holds ``USGS_split_{split}_{questions,answers,images}.json`` (index-aligned full lists
with ``active`` flags: a question's ``answers_ids[0]`` and ``img_id`` index the other two lists)
and the images, either extracted (``Data/{id}.png``) or as the record's ``Images.tar`` (about 13
GB), from which only the drawn images are read, in one streaming pass that stops once it has them.
``--checksums`` (the record's API JSON, https://zenodo.org/api/records/6344367, saved locally, or
``md5sum`` lines) verifies every file read against the md5 Zenodo publishes.

stats = train, eval = val (SPEC.md 2: "val (or test)"). One question per image, as the authors
did; the question type (presence, comp, count, area) goes into meta for the per-type scores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .base import Candidate, Skip, SourceError, draw_order, read_tar_members, require, source_file

log = logging.getLogger(__name__)

DOMAIN = "rs"
SPLITS = {"stats": "train", "eval": "val"}
ONE_PER_IMAGE = True
RECORD = "https://zenodo.org/records/6344367"
LICENCE = (
    "RSVQA-HR (Lobry, Marcos, Murray, Tuia; Zenodo 10.5281/zenodo.6344367): CC BY 4.0 as listed on "
    "the record; imagery USGS HRO (public domain), questions and answers generated from OpenStreetMap "
    "(ODbL). Attribute: Lobry et al., 'RSVQA: Visual Question Answering for Remote Sensing Data', "
    "IEEE TGRS 2020."
)
PREFETCH_MARGIN = 0.1  # extra images read in the tar pass, to replace bad ones without a second pass


def add_arguments(group) -> None:
    group.add_argument(
        "--root", required=True, type=Path, help="folder with the USGS_split_*.json files and Images.tar or Data/"
    )
    group.add_argument(
        "--images",
        type=Path,
        help="Images.tar or the extracted Data/ folder (default: ROOT/Data, else ROOT/Images.tar)",
    )
    group.add_argument("--checksums", type=Path, help="Zenodo record JSON or md5sum lines to verify the files against")
    group.add_argument(
        "--image-format", choices=("png", "tif"), default="png", help="which of the record's two copies of each image"
    )


def candidates(args, split: str):
    root = require(args.root, "RSVQA-HR folder (--root)", f"download the record's files from {RECORD}")
    published = _checksums(args.checksums) if args.checksums else {}
    lists = {}
    for kind in ("questions", "answers", "images"):
        path = require(
            root / f"USGS_split_{SPLITS[split]}_{kind}.json", "RSVQA-HR split file", f"download it from {RECORD}"
        )
        yield _record(path, published)
        lists[kind] = _load(path, kind)
    images = _images(root, args)
    found = []
    for number, question in enumerate(lists["questions"]):
        item = _candidate(number, question, lists, args.image_format)
        if isinstance(item, Skip) or item is not None:
            found.append(item)
    if images.is_dir():
        for item in found:
            if isinstance(item, Candidate):
                item.load_image = (images / item.meta["image"]).read_bytes
    else:
        yield _record(images, published)
        _from_tar(images, [item for item in found if isinstance(item, Candidate)], args)
    yield from found


def _candidate(number: int, question, lists: dict, image_format: str):
    if not isinstance(question, dict):
        return Skip(f"rsvqa-row{number}", f"questions entry {number}: not an object")
    if not question.get("active", False):
        return None  # not part of this split
    sample_id = f"rsvqa-{question.get('id', f'row{number}')}"
    try:
        answer = lists["answers"][question["answers_ids"][0]]
        image = lists["images"][question["img_id"]]
        if answer.get("question_id") != question["id"]:
            raise ValueError(f"answer {question['answers_ids'][0]} belongs to question {answer.get('question_id')}")
        if not image.get("active", False):
            raise ValueError(f"image {question['img_id']} is not active in this split")
        text, reply = question["question"], answer["answer"]
        if not isinstance(text, str) or not text.strip() or not isinstance(reply, (str, int)) or str(reply) == "":
            raise ValueError("empty question or answer")
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as error:
        return Skip(sample_id, f"questions entry {number}: malformed ({type(error).__name__}: {error})")
    name = f"{question['img_id']}.{image_format}"
    meta = {
        "question_id": question["id"],
        "img_id": question["img_id"],
        "question_type": question.get("type"),
        "image": name,
    }
    return Candidate(sample_id, text.strip(), [str(reply)], _missing, meta, image_key=str(question["img_id"]))


def _missing() -> bytes:
    raise FileNotFoundError("image not found")


def _images(root: Path, args) -> Path:
    if args.images:
        return require(args.images, "RSVQA-HR images (--images)", f"give Images.tar or its Data/ folder from {RECORD}")
    for path in (root / "Data", root / "Images.tar"):
        if path.exists():
            return path
    raise SourceError(
        f"RSVQA-HR images not found: {root}/Data or {root}/Images.tar (download Images.tar from {RECORD})"
    )


def _from_tar(tar: Path, found: list[Candidate], args) -> None:
    """Point the candidates' images into the tar: the images of the first draws (in the base's
    draw order for this seed, a margin included) are read in one pass; any other image drawn later
    (a replacement past the margin) costs one more pass, reading the next block of the order."""
    order = [found[i] for i in draw_order(len(found), args.seed)]
    block = max(1, int(args.n * (1 + PREFETCH_MARGIN)) + 1)
    cache: dict[str, bytes] = {}
    read: set[str] = set()

    def load(name: str) -> bytes:
        if name not in read:
            start = next(i for i, c in enumerate(order) if c.meta["image"] == name)
            wanted = []
            for candidate in order[start:]:
                image = candidate.meta["image"]
                if image not in read and image not in wanted:
                    wanted.append(image)
                if len(wanted) == block:
                    break
            with open(tar, "rb") as handle:
                cache.update(read_tar_members(handle, [f"Data/{image}" for image in wanted], not args.no_progress))
            read.update(wanted)
        data = cache.pop(f"Data/{name}", None)
        if data is None:
            raise FileNotFoundError(f"Data/{name} is not in {tar.name}")
        return data

    for candidate in found:
        candidate.load_image = lambda name=candidate.meta["image"]: load(name)


def _load(path: Path, kind: str) -> list:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))[kind]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise SourceError(f"{path}: not an RSVQA JSON with a {kind!r} list ({type(error).__name__})") from None
    if not isinstance(entries, list):
        raise SourceError(f"{path}: {kind!r} is not a list")
    return entries


def _checksums(path: Path) -> dict[str, str]:
    """File name -> md5 from the record's API JSON (``files`` or ``entries``: key + "md5:...") or md5sum lines."""
    text = require(path, "checksums file (--checksums)", f"save {RECORD.replace('records', 'api/records')}").read_text()
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        pairs = (line.split() for line in text.splitlines() if line.strip())
        return {name.lstrip("*"): digest for digest, name in pairs}
    files = record.get("files") or record.get("entries") or []
    if isinstance(files, dict):  # the newer API nests the list under files.entries
        files = list(files.get("entries", {}).values())
    return {entry["key"]: entry["checksum"].split(":", 1)[-1] for entry in files}


def _record(path: Path, published: dict[str, str]):
    digest = published.get(path.name)
    if published and digest is None:
        log.warning("%s has no published md5 in the checksums file; not verified", path.name)
    return source_file(path, ("md5", digest) if digest else None)
