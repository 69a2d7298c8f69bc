"""lingoqa: LingoQA (Wayve), the official parquet and its frames from a folder or ``images.zip``.

``--root`` is one set's folder as distributed on Google Drive: ``val.parquet`` (the Evaluation
set, for eval) or ``train.parquet`` (the Action or Scenery set, for stats) with the frames
``images/{split}/<segment_id>/{0..4}.jpg`` extracted beside it or inside ``images.zip``. Columns:
``question_id``, ``segment_id``, ``images`` (the 5 frame paths), ``question``, ``answer``; the
Evaluation set has two rows (two references) per question, which become one sample with
``answers`` [ref1, ref2] in the parquet's order.

``--frames joined`` (default, as the authors did) puts the five frames side by side, left to right
in time, in one image; ``--frames separate`` makes one sample per frame (``{question_id}/f{k}``,
the frame index in meta), each its own candidate of the draw: more single frames for the
statistics, but five answers per question, so not for evaluation.

The git-history copy of ``val.parquet`` has a known sha256; a different file (the Drive copy may
differ) is a warning, not an error.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

from .base import Candidate, Skip, SourceError, open_zip, require, source_file

log = logging.getLogger(__name__)

DOMAIN = "ad"
SPLITS = {"stats": "train", "eval": "val"}
FRAMES = 5
REPOSITORY = "https://github.com/wayveai/LingoQA"
# wayveai/LingoQA@fd8cdac:val.parquet (73,927 bytes)
VAL_SHA256 = "435461a8a8038ad8d2a8fe98388f40530978149e60e7beaaa41174088fe53caf"
COLUMNS = ["question_id", "segment_id", "images", "question", "answer"]
JPEG_QUALITY = 95  # joined strips are photographs five frames wide: JPEG keeps the files small
LICENCE = (
    "LingoQA: Wayve Dataset Licence Agreement for Non-Commercial Use (Feb 2024): personal, "
    "non-exclusive, non-transferable, non-sublicensable and revocable; non-commercial use only; not for "
    "use in operating vehicles or robots; do not redistribute the data. Required attribution: This work "
    "was made using the Wayve LingoQA dataset and benchmark, provided by Wayve Technologies Ltd under "
    "licence terms available at https://github.com/wayveai/LingoQA."
)


def add_arguments(group) -> None:
    group.add_argument(
        "--root", required=True, type=Path, help="folder with val.parquet or train.parquet and images/ or images.zip"
    )
    group.add_argument(
        "--frames",
        choices=("joined", "separate"),
        default="joined",
        help="joined: the 5 frames side by side in one image (the authors' way); separate: one sample per frame",
    )


def candidates(args, split: str):
    root = require(args.root, "LingoQA folder (--root)", f"download the set's folder as {REPOSITORY} describes")
    name = SPLITS[split]
    path = require(
        root / f"{name}.parquet", "LingoQA parquet", f"download the set's {name}.parquet as {REPOSITORY} describes"
    )
    record = source_file(path)
    yield record
    if name == "val" and record.digest != f"sha256:{VAL_SHA256}":
        log.warning(
            "%s: %s differs from the git-history copy's sha256:%s (the Drive copy may differ)",
            path,
            record.digest,
            VAL_SHA256,
        )
    frames = _frames(root)
    for item in _grouped(path):
        if isinstance(item, Skip):
            yield item
        elif args.frames == "joined":
            yield _joined(item, frames)
        else:
            yield from _separate(item, frames)


def _grouped(path: Path):
    """One entry per question_id (first-seen order): its rows' references together; a question
    whose rows disagree on question, segment or frames, or lack a field, is a Skip."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except OSError as error:
        raise SourceError(f"{path}: not a readable parquet file ({type(error).__name__})") from None
    missing = [column for column in COLUMNS if column not in table.column_names]
    if missing:
        raise SourceError(f"{path}: missing column(s) {missing}; expected {COLUMNS}")
    questions: dict[str, list[tuple[int, dict]]] = {}
    for number, row in enumerate(table.select(COLUMNS).to_pylist()):
        questions.setdefault(str(row["question_id"]), []).append((number, row))
    for question_id, rows in questions.items():
        sample_id = f"lingoqa-{question_id}"
        first = rows[0][1]
        where = f"{path.name} rows {[number for number, _ in rows]}"
        images = first["images"]
        if any(
            (row["question"], row["segment_id"], row["images"]) != (first["question"], first["segment_id"], images)
            for _, row in rows
        ):
            yield Skip(sample_id, f"{where}: the rows of one question_id disagree on question, segment or frames")
        elif not isinstance(first["question"], str) or not first["question"].strip():
            yield Skip(sample_id, f"{where}: no question")
        elif not isinstance(images, list) or len(images) != FRAMES or not all(isinstance(i, str) and i for i in images):
            yield Skip(sample_id, f"{where}: expected {FRAMES} frame paths, got {images!r:.80}")
        elif any(not isinstance(row["answer"], str) or not row["answer"].strip() for _, row in rows):
            yield Skip(sample_id, f"{where}: an empty answer")
        else:
            meta = {"question_id": question_id, "segment_id": first["segment_id"], "frames": images}
            yield Candidate(
                sample_id,
                first["question"].strip(),
                [row["answer"] for _, row in rows],
                None,
                meta,
                first["segment_id"],
            )


class _Frames:
    """The frames by their parquet path (``images/val/<segment>/0.jpg``): extracted under the root,
    or members of ``images.zip`` (matched by the path's last three parts, wherever the zip nests them)."""

    def __init__(self, root: Path, archive: zipfile.ZipFile | None):
        self.root, self.archive = root, archive
        self.members = {}
        if archive is not None:
            for member in archive.namelist():
                if not member.endswith("/"):
                    self.members.setdefault(_tail(member), member)

    def read(self, path: str) -> bytes:
        if self.archive is None:
            return (self.root / path).read_bytes()
        member = self.members.get(_tail(path))
        if member is None:
            raise FileNotFoundError(f"{path} is not in images.zip")
        return self.archive.read(member)


def _tail(path: str) -> str:
    return "/".join(path.replace("\\", "/").split("/")[-3:])


def _frames(root: Path) -> _Frames:
    if (root / "images").is_dir():
        return _Frames(root, None)
    if (root / "images.zip").exists():
        return _Frames(root, open_zip(root / "images.zip"))
    raise SourceError(f"LingoQA frames not found: {root}/images or {root}/images.zip (download the set's images.zip)")


def _joined(candidate: Candidate, frames: _Frames) -> Candidate:
    candidate.load_image = lambda: join([frames.read(path) for path in candidate.meta["frames"]])
    return candidate


def _separate(candidate: Candidate, frames: _Frames):
    for index, path in enumerate(candidate.meta["frames"]):
        meta = {**candidate.meta, "frame": index}
        load = lambda path=path: frames.read(path)  # noqa: E731 - one closure per frame
        yield Candidate(
            f"{candidate.sample_id}/f{index}", candidate.question, list(candidate.answers), load, meta, path
        )


def join(encoded: list[bytes]) -> bytes:
    """The frames side by side, left to right, top-aligned on black where heights differ; JPEG."""
    from PIL import Image

    images = []
    for data in encoded:
        with Image.open(io.BytesIO(data)) as image:
            images.append(image.convert("RGB"))
    strip = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)))
    left = 0
    for image in images:
        strip.paste(image, (left, 0))
        left += image.width
    buffer = io.BytesIO()
    strip.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
