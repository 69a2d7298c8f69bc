"""pmc_vqa: PMC-VQA (multiple choice A-D), the CSVs and figure zips of the hub repository xmcmic/PMC-VQA.

``--root`` holds the CSVs as the hub repository publishes them (``train.csv``, ``train_2.csv``,
``test.csv``, ``test_clean.csv``; columns ``Figure_path``, ``Question``, ``Answer``, ``Choice A`` ..
``Choice D``, ``Answer_label``; ``train.csv`` also has ``Caption``, older copies spell ``Anwser``)
and the figures: extracted (``figures/`` or ``images/``, the folders the authors' code looks in) or
as ``images.zip`` / ``images_2.zip``, of which only the drawn members are read (members are matched
by base name, wherever the zip nests them). ``--images`` names a zip (a local path or an http(s)
URL, read through range requests) or a folder instead.

Splits: stats = ``train.csv`` (v1, the figures of ``images.zip``; ``--train v2`` or ``both`` adds
``train_2.csv`` with ``images_2.zip``), eval = ``test_clean.csv`` (the 2,000 manually checked test
questions, SPEC.md 2; ``--eval-file test`` takes the 50,000-row ``test.csv``). The authors' code
names a ``val.csv`` that does not exist. One question per figure, as the authors did.

A sample's ``question`` is the CSV's question alone; the four options go into ``meta["options"]``
(a list in the order A-D, each without the ``A:`` prefix the CSVs carry), so an evaluation prompt
lists them with ``{options}`` (``A. text`` lines, :func:`mmneuron.models.inputs.format_options`), as
config/paper.yaml's med prompt does, and the option metrics take the letters from the same list.
The statistics prompt (``<image>\\n{question}``) shows the question only, as the authors' did.

``answers`` is the correct letter alone (``["B"]``): SPEC.md 6 scores PMC-VQA by the option letter
(``option_accuracy`` reads the letter from the reference), the evaluation prompt asks for the
letter, so the answer log-likelihood scores the letter a model is asked to write, and the authors'
code takes ``Answer_label`` as the answer too. The option's text stays in meta (``answer``: the
CSV's ``Answer``; ``options[letter]``). Unlike the authors' code, a row whose ``Answer_label`` is
not A-D is skipped (they fell back to the answer text, which the letter metric cannot score).

Checksums: DATASETS.md records no published digest for these files (the hub shows LFS sha256s on
its file pages, not copied here), so none is checked; every CSV read is recorded with its sha256,
the zips (over the base's digest limit) by size.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from .base import Candidate, Skip, SourceError, SourceFile, open_zip, require, source_file, zip_names

DOMAIN = "med"
SPLITS = {"stats": "train.csv", "eval": "test_clean.csv"}
ONE_PER_IMAGE = True
REPOSITORY = "https://huggingface.co/datasets/xmcmic/PMC-VQA"
LETTERS = "ABCD"
TRAIN = {"v1": ("train.csv",), "v2": ("train_2.csv",), "both": ("train.csv", "train_2.csv")}
EVAL = {"test_clean": "test_clean.csv", "test": "test.csv"}
# the figure zip of each CSV: v2 (train_2.csv) has its own
ZIPS = dict.fromkeys(("train.csv", "test.csv", "test_clean.csv"), "images.zip") | {"train_2.csv": "images_2.zip"}
FOLDERS = ("figures", "images")  # extracted figures, in the order the authors' code looks
REQUIRED = ["Figure_path", "Question", *(f"Choice {letter}" for letter in LETTERS), "Answer_label"]
LICENCE = (
    "PMC-VQA (Zhang et al., hub xmcmic/PMC-VQA): CC BY-SA, as its README states since July 2024; the "
    "figures come from the PubMed Central Open Access commercial-use subset (CC0/CC BY). Share adapted "
    "material under the same licence. Cite Zhang et al., 'PMC-VQA: Visual Instruction Tuning for "
    "Medical Visual Question Answering', 2023."
)


def add_arguments(group) -> None:
    group.add_argument(
        "--root",
        required=True,
        type=Path,
        help="folder with the PMC-VQA CSVs and images.zip (or images_2.zip, or the figures extracted to figures/)",
    )
    group.add_argument(
        "--images",
        help="the figures instead: a zip (path or http(s) URL) or a folder (default: ROOT/figures, ROOT/images, "
        "else ROOT/images.zip and ROOT/images_2.zip)",
    )
    group.add_argument(
        "--train",
        choices=tuple(TRAIN),
        default="v1",
        help="stats rows: v1 train.csv (default), v2 train_2.csv, or both",
    )
    group.add_argument(
        "--eval-file",
        choices=tuple(EVAL),
        default="test_clean",
        help="eval rows: test_clean.csv (2,000, default) or test.csv (50,000)",
    )


def candidates(args, split: str):
    root = require(args.root, "PMC-VQA folder (--root)", f"download the CSVs and images.zip from {REPOSITORY}")
    names = TRAIN[args.train] if split == "stats" else (EVAL[args.eval_file],)
    paths = [require(root / name, "PMC-VQA CSV", f"download {name} from {REPOSITORY}") for name in names]
    figures = _Figures(root, args.images, [ZIPS[name] for name in names])
    yield from figures.files
    for path in paths:
        yield source_file(path)
        yield from _rows(path, figures)


def _rows(path: Path, figures: _Figures):
    """The CSV's rows in file order: a Candidate per usable row, a Skip (naming the row) per malformed one."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "Answer" not in columns and "Anwser" in columns:  # the older README's spelling
                columns = reader.fieldnames = ["Answer" if c == "Anwser" else c for c in columns]
            missing = [column for column in REQUIRED if column not in columns]
            if missing:
                raise SourceError(f"{path}: missing column(s) {missing}; expected the PMC-VQA columns {REQUIRED}")
            rows = [(number, reader.line_num, row) for number, row in enumerate(reader)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise SourceError(f"{path}: not a readable CSV ({type(error).__name__}: {error})") from None
    for number, line, row in rows:
        yield _row(path.name, number, line, row, figures)


def _row(file: str, number: int, line: int, row: dict, figures: _Figures) -> Candidate | Skip:
    sample_id = f"pmc_vqa-{Path(file).stem}-{number}"
    where = f"{file} row {number} (line {line})"
    figure, question = _text(row.get("Figure_path")), _text(row.get("Question"))
    label = _text(row.get("Answer_label")).upper()
    options = [_option(letter, row.get(f"Choice {letter}")) for letter in LETTERS]
    if not figure:
        return Skip(sample_id, f"{where}: no Figure_path")
    if not question:
        return Skip(sample_id, f"{where}: no question")
    empty = [letter for letter, text in zip(LETTERS, options) if not text]
    if empty:
        return Skip(sample_id, f"{where}: no text for choice(s) {', '.join(empty)}")
    if len(label) != 1 or label not in LETTERS:
        return Skip(sample_id, f"{where}: Answer_label {row.get('Answer_label')!r} is not one of A-D")
    meta = {
        "figure_path": figure,
        "options": options,
        "answer_label": label,
        "answer": _text(row.get("Answer")) or None,
        "file": file,
        "row": number,
    }
    return Candidate(sample_id, question, [label], figures.loader(figure), meta, image_key=figure)


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def _option(letter: str, value) -> str:
    """A choice's text without the letter prefix the CSVs carry (``A:Diffuse uptake``, also ``A.`` / ``A)``)."""
    text = _text(value)
    return re.sub(rf"^{letter}\s*[:.)]\s*", "", text).strip()


class _Figures:
    """Where the figures are: a folder (read by file name) or zips (members by base name)."""

    def __init__(self, root: Path, images: str | None, zips: list[str]):
        self.folder: Path | None = None
        self.members: dict[str, tuple] = {}
        self.files: list[SourceFile] = []
        if images:
            if not images.startswith(("http://", "https://")) and Path(images).is_dir():
                self.folder = Path(images)
            else:
                self._add_zip(images)
            return
        for name in FOLDERS:
            if (root / name).is_dir():
                self.folder = root / name
                return
        zips = list(dict.fromkeys(zips))
        present = [name for name in zips if (root / name).exists()]
        if not present:
            raise SourceError(
                f"PMC-VQA figures not found: {root}/figures, {root}/images or {root}/{' or '.join(zips)} "
                f"(download {' and '.join(zips)} from {REPOSITORY})"
            )
        for name in present:
            self._add_zip(str(root / name))

    def _add_zip(self, location: str) -> None:
        archive = open_zip(location)
        remote = location.startswith(("http://", "https://"))
        self.files.append(SourceFile(location) if remote else source_file(location))
        for base, member in zip_names(archive).items():
            self.members.setdefault(base, (archive, member))

    def loader(self, figure: str):
        if self.folder is not None:
            return (self.folder / figure).read_bytes
        return lambda: self._read(figure)

    def _read(self, figure: str) -> bytes:
        found = self.members.get(figure.rsplit("/", 1)[-1])
        if found is None:
            raise FileNotFoundError(f"{figure} is not in the figures zip")
        archive, member = found
        return archive.read(member)
