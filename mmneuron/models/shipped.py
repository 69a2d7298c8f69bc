"""A model folder shipped with the repository (the demo model), copied only when intact.

The folder's ``SHA256SUMS`` (``sha256sum`` format: ``<hex digest>  <file name>``) lists every file
of the model; a copy checks each digest first, so a damaged or partial checkout is refused with the
file named instead of being analysed.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from mmneuron.errors import MmneuronError

CHECKSUMS = "SHA256SUMS"


class ShippedModelError(MmneuronError):
    """A shipped model folder that is missing, incomplete or altered; the message names the file."""


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def checked_files(source: str | Path) -> list[Path]:
    """The files ``SHA256SUMS`` lists in ``source``, each checked against its digest."""
    source = Path(source)
    listing = source / CHECKSUMS
    if not listing.is_file():
        raise ShippedModelError(f"{listing}: not found (a shipped model folder lists its files there)")
    files = []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or "/" in name:
            raise ShippedModelError(f"{listing}, line {number}: expected '<sha256>  <file name>', got {line!r}")
        path = source / name
        if not path.is_file():
            raise ShippedModelError(f"{path}: listed in {listing} but missing")
        if _digest(path) != digest:
            raise ShippedModelError(f"{path}: its SHA-256 differs from {listing} (altered or damaged)")
        files.append(path)
    if not files:
        raise ShippedModelError(f"{listing}: lists no file")
    return files


def install(source: str | Path, out: str | Path) -> list[Path]:
    """Copy the checked files of ``source`` into ``out`` (created); returns the copies."""
    out = Path(out)
    files = checked_files(source)
    out.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(path, out / path.name)) for path in files]
