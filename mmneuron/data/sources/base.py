"""What every dataset source shares: candidates, the seeded draw, image checks, checksums,
archive members, and writing the samples file with its metadata.

A source module lists its rows as :class:`Candidate` s (and :class:`Skip` s for malformed rows,
:class:`SourceFile` s for the files it read) in a deterministic order; :func:`prepare` draws N
of them with a seed, reads and checks only the drawn images, and writes the sample format
(:mod:`mmneuron.data.samples`) with the draw rule, the files and every skip in the metadata.

Imports here are the standard library only (PIL, pyarrow and tqdm when used), so that the source
modules, which import this one, keep ``mmneuron --help`` light.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import random
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mmneuron.errors import MmneuronError

log = logging.getLogger(__name__)

SPLITS = ("stats", "eval")  # the paper's statistics split and its evaluation split
DIGEST_LIMIT = 1 << 30  # files larger than this (image archives) are recorded by size, not digest
HASH_BLOCK = 1 << 20


class SourceError(MmneuronError):
    """A dataset source that cannot be read: the message names the file, folder, URL or row."""


@dataclass
class Candidate:
    """One question of a source, its image not yet read.

    ``load_image`` returns the encoded image bytes (read only for the drawn candidates; it may
    raise any error for a missing or unreadable image, which becomes a counted skip).
    ``image_key`` identifies the image for the one-question-per-image rule.
    """

    sample_id: str
    question: str
    answers: list[str]
    load_image: Callable[[], bytes]
    meta: dict = field(default_factory=dict)
    image_key: str | None = None


@dataclass
class Skip:
    """A malformed row found while listing: counted and recorded, never dropped silently."""

    sample_id: str
    reason: str


@dataclass
class SourceFile:
    """A file the source read, recorded in the samples file's metadata."""

    name: str
    size: int | None = None
    digest: str | None = None  # "sha256:<hex>" or "md5:<hex>"

    def record(self) -> dict:
        return {"name": self.name, "size": self.size, "digest": self.digest}


@dataclass
class Listing:
    """What a source listed: its candidates in the source's order, malformed rows, files read."""

    candidates: list[Candidate] = field(default_factory=list)
    malformed: list[Skip] = field(default_factory=list)
    files: list[SourceFile] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.candidates) + len(self.malformed)


# --- files, checksums, archives ---------------------------------------------------------------


def require(path: Path, what: str, how: str) -> Path:
    """``path`` if it exists, else a :class:`SourceError` naming it, what it is and how to get it."""
    if not Path(path).exists():
        raise SourceError(f"{what} not found: {path} ({how})")
    return Path(path)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file (``md5`` or ``sha256``), read in blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: str | Path, expected: str, algorithm: str = "md5") -> str:
    """Check a file against a published digest; a mismatch names the file and both digests."""
    found = file_digest(path, algorithm)
    if found.lower() != expected.lower():
        raise SourceError(f"{path}: {algorithm} is {found}, but the published value is {expected}; re-download it")
    return found


def source_file(path: str | Path, checksum: tuple[str, str] | None = None) -> SourceFile:
    """A :class:`SourceFile` for ``path``: verified against ``checksum`` ((algorithm, digest)) when
    given, else its sha256 when the file is at most :data:`DIGEST_LIMIT` bytes."""
    path = Path(path)
    size = path.stat().st_size
    if checksum is not None:
        algorithm, expected = checksum
        return SourceFile(str(path), size, f"{algorithm}:{verify_checksum(path, expected, algorithm)}")
    digest = f"sha256:{file_digest(path)}" if size <= DIGEST_LIMIT else None
    return SourceFile(str(path), size, digest)


def open_zip(location: str | Path) -> zipfile.ZipFile:
    """A zip archive, local or at an http(s) URL; over HTTP only the central directory and the
    members read are fetched (range requests through ``fsspec``)."""
    text = str(location)
    if text.startswith(("http://", "https://")):
        import fsspec

        try:
            # small blocks: a member read fetches about itself, not megabytes around it
            handle = fsspec.open(text, mode="rb", block_size=1 << 16).open()
            return zipfile.ZipFile(handle)
        except (OSError, zipfile.BadZipFile) as error:
            raise SourceError(f"cannot read the zip archive at {text} ({type(error).__name__}: {error})") from None
    require(Path(text), "zip archive", "download it or give its folder")
    try:
        return zipfile.ZipFile(text)
    except (OSError, zipfile.BadZipFile) as error:
        raise SourceError(f"{text}: not a readable zip archive ({type(error).__name__})") from None


def zip_names(archive: zipfile.ZipFile) -> dict[str, str]:
    """Member base names -> full member names (images are looked up by file name wherever the
    archive nests them); a base name held twice keeps its first member."""
    names: dict[str, str] = {}
    for name in archive.namelist():
        if not name.endswith("/"):
            names.setdefault(name.rsplit("/", 1)[-1], name)
    return names


def read_tar_members(fileobj, wanted: Iterable[str], progress: bool = True) -> dict[str, bytes]:
    """The bytes of the ``wanted`` members (matched by full name or base name) of a tar stream,
    read in one pass that stops once all are found; members never found are absent."""
    from tqdm.auto import tqdm

    wanted = set(wanted)
    found: dict[str, bytes] = {}
    with (
        tarfile.open(fileobj=fileobj, mode="r|*") as archive,
        tqdm(total=len(wanted), desc="tar members", unit="file", disable=not progress) as bar,
    ):
        for member in archive:
            if not member.isfile():
                continue
            name = next((key for key in (member.name, member.name.rsplit("/", 1)[-1]) if key in wanted), None)
            if name is None or name in found:
                continue
            found[name] = archive.extractfile(member).read()
            bar.update(1)
            if len(found) == len(wanted):
                break
    return found


def check_image(data: bytes) -> None:
    """Raise when ``data`` is not a whole decodable image."""
    from PIL import Image

    if not data:
        raise ValueError("no image bytes")
    with Image.open(io.BytesIO(data)) as image:
        image.load()


# --- the draw ---------------------------------------------------------------------------------


def draw_rule(seed: int, one_per_image: bool) -> str:
    """The draw, in words, as the samples file records it."""
    rule = (
        f"every usable row of the source listed in the source's own order, shuffled with Python's "
        f"random.Random({seed}).shuffle; candidates taken in that order"
    )
    if one_per_image:
        rule += ", keeping only the first question of each image"
    return rule + "; a missing or corrupt image is skipped and replaced by the next candidate"


def listing(items: Iterable[Candidate | Skip | SourceFile], progress: bool = True) -> Listing:
    """Collect what a source's ``candidates`` yields (images are not read here)."""
    from tqdm.auto import tqdm

    found = Listing()
    for item in tqdm(items, desc="listing", unit="row", disable=not progress):
        if isinstance(item, Candidate):
            found.candidates.append(item)
        elif isinstance(item, Skip):
            found.malformed.append(item)
        elif isinstance(item, SourceFile):
            found.files.append(item)
        else:
            raise TypeError(f"a source yielded {type(item).__name__}, not a Candidate, Skip or SourceFile")
    return found


def draw_order(count: int, seed: int) -> list[int]:
    """The draw order of ``count`` candidates: a permutation fixed by ``seed``."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


def draw(
    found: Listing,
    n: int,
    seed: int,
    bad: list[Skip],
    one_per_image: bool = False,
    max_bad_share: float = 0.0,
    progress: bool = True,
) -> Iterator[tuple[Candidate, bytes]]:
    """Yield ``n`` candidates with their image bytes: the candidates in :func:`draw_order` (the
    first of each image when ``one_per_image``), reading and decoding each image; a missing or
    corrupt one is appended to ``bad`` and replaced by the next candidate. More bad images than
    ``max_bad_share`` of the images read is a :class:`SourceError` naming the skipped ids, raised
    as soon as it is certain."""
    from tqdm.auto import tqdm

    chosen = 0
    seen_images: set[str] = set()
    with tqdm(total=n, desc="images", unit="image", disable=not progress) as bar:
        for index in draw_order(len(found.candidates), seed):
            if chosen == n:
                break
            candidate = found.candidates[index]
            if one_per_image:
                key = candidate.image_key or candidate.sample_id
                if key in seen_images:
                    continue
                seen_images.add(key)
            try:
                data = candidate.load_image()
                check_image(data)
            except Exception as error:  # missing files and PIL's many error types alike
                reason = f"image unreadable ({type(error).__name__}: {error})"
                log.warning("skipping %s: %s", candidate.sample_id, reason)
                bad.append(Skip(candidate.sample_id, reason))
                bar.set_postfix(skipped=len(bad), refresh=False)
                check_share(bad, n + len(bad), max_bad_share, "images read")  # the most that can be read
                continue
            chosen += 1
            bar.update(1)
            yield candidate, data
    check_share(bad, chosen + len(bad), max_bad_share, "images read")
    if chosen < n:
        log.warning("only %d usable candidates of the %d requested", chosen, n)


def check_share(skips: list[Skip], total: int, max_bad_share: float, what: str) -> None:
    """A :class:`SourceError` naming the skips when they are more than ``max_bad_share`` of ``total``."""
    from mmneuron.data.samples import too_many_bad

    if len(skips) > math.floor(max_bad_share * total + 1e-9):
        entries = [{"sample_id": skip.sample_id, "reason": skip.reason} for skip in skips]
        raise SourceError(too_many_bad(entries, total, max_bad_share, what))


# --- the samples file -------------------------------------------------------------------------


def prepare(
    module,
    args,
    split: str,
    n: int,
    seed: int,
    out: str | Path,
    domain: str,
    max_bad_share: float = 0.0,
    progress: bool = True,
) -> dict:
    """Draw ``n`` samples of a source module's ``split`` and write them to ``out`` in the sample
    format, with the file's metadata (returned): source, split, n, seed, draw rule, files and
    digests, skips with reasons, licence. The file appears only when the draw succeeded."""
    from mmneuron.data.samples import Sample, write_samples

    if split not in SPLITS:
        raise SourceError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    name = module.__name__.rsplit(".", 1)[-1]
    # a source's --one-per-image option, where it has one, over its fixed rule
    one_per_image = getattr(args, "one_per_image", None)
    if one_per_image is None:
        one_per_image = getattr(module, "ONE_PER_IMAGE", False)
    found = listing(module.candidates(args, split), progress)
    check_share(found.malformed, found.rows, max_bad_share, "rows")
    bad: list[Skip] = []
    written: list[str] = []

    def samples() -> Iterator[Sample]:
        for candidate, data in draw(found, n, seed, bad, one_per_image, max_bad_share, progress):
            written.append(candidate.sample_id)
            meta = {**candidate.meta, "source": name, "split": split, "seed": seed}
            yield Sample(candidate.sample_id, domain, candidate.question, list(candidate.answers), data, meta)

    def metadata() -> dict:
        return {
            "source": name,
            "domain": domain,
            "split": split,
            "official_split": getattr(module, "SPLITS", {}).get(split, split),
            "n": len(written),
            "requested": n,
            "seed": seed,
            "draw": draw_rule(seed, one_per_image),
            "rows_listed": found.rows,
            "files": [file.record() for file in found.files],
            "skipped": [{"sample_id": s.sample_id, "reason": s.reason} for s in found.malformed + bad],
            "licence": module.LICENCE,
        }

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    try:
        write_samples(samples(), partial, metadata=metadata)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    return metadata()
