"""Parquet mirrors on the Hugging Face hub (the `datasets` library's layout: files
``{split}-*.parquet``, images in an ``image`` {bytes, path} struct column), read the same way by every
source that has one: the split's files from a local file or folder or an fsspec URL (``hf://``:
HTTP range requests), their text columns row group by row group while listing, and later only the
row groups of the drawn rows for their images.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

from .base import SourceError, SourceFile, require, source_file


def is_remote(location: str) -> bool:
    return "://" in location


def parquet_files(location: str, split: str, source: str, repository: str, hint: str = "") -> list[str]:
    """The ``{split}-*.parquet`` files of ``repository``'s mirror at ``location``, sorted; none is an
    error naming the location (and ``hint``)."""
    if is_remote(location):
        import fsspec

        fs, _, _ = fsspec.get_fs_token_paths(location)
        root = location.split("://", 1)[1].rstrip("/")
        try:
            found = [f for f in fs.find(root) if posixpath.basename(f).startswith(f"{split}-")]
        except OSError as error:
            raise SourceError(
                f"cannot list the {source} mirror at {location} ({type(error).__name__}: {error})"
            ) from None
        protocol = location.split("://", 1)[0]
        files = [f"{protocol}://{f}" for f in found if f.endswith(".parquet")]
    else:
        path = require(Path(location), f"{source} parquet mirror (--mirror)", f"download {repository}")
        if path.is_file():
            return [str(path)]
        files = [str(f) for f in path.rglob(f"{split}-*.parquet")]
    if not files:
        raise SourceError(f"{location}: no {split}-*.parquet file of {repository} found{hint}")
    return sorted(files)


def _open(location: str):
    if is_remote(location):
        import fsspec

        return fsspec.open(location, mode="rb", block_size=1 << 20).open()
    return open(location, "rb")


def text_rows(
    files: Sequence[str], columns: Sequence[str], repository: str
) -> Iterator[SourceFile | tuple[str, int, int, dict]]:
    """For each file its :class:`SourceFile`, then ``(file, row group, row, {column: value})`` for each
    of its rows: the ``columns`` only, images left for :func:`image_bytes`."""
    import pyarrow.parquet as pq

    for file in files:
        yield SourceFile(file) if is_remote(file) else source_file(file)
        try:
            with _open(file) as handle:
                parquet = pq.ParquetFile(handle)
                missing = [name for name in [*columns, "image"] if name not in parquet.schema_arrow.names]
                if missing:
                    raise SourceError(f"{file}: missing column(s) {missing}; expected the {repository} layout")
                groups = [
                    parquet.read_row_group(g, columns=list(columns)).to_pylist() for g in range(parquet.num_row_groups)
                ]
        except OSError as error:
            raise SourceError(f"{file}: not a readable parquet file ({type(error).__name__})") from None
        for group, rows in enumerate(groups):
            for index, row in enumerate(rows):
                yield file, group, index, row


def where(file: str, group: int, index: int) -> str:
    """A row's place, for skip reasons."""
    return f"{posixpath.basename(file)} row group {group} row {index}"


@lru_cache(maxsize=1)
def _image_column(file: str, group: int) -> list:
    """One row group's images (the last one read is kept: neighbours in a group are often drawn together)."""
    import pyarrow.parquet as pq

    with _open(file) as handle:
        return pq.ParquetFile(handle).read_row_group(group, columns=["image"]).column("image").to_pylist()


def image_bytes(file: str, group: int, index: int) -> bytes:
    """The encoded image of one row."""
    image = _image_column(file, group)[index] or {}
    if not image.get("bytes"):
        raise ValueError("the parquet row holds no image bytes")
    return image["bytes"]
