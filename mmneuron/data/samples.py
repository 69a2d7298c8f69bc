"""The sample format shared by every stage: one parquet file per domain and split.

Columns (DESIGN.md): ``sample_id`` (str), ``domain`` (str), ``question`` (str), ``answers``
(list of str, the references), ``image`` (encoded image bytes), ``meta`` (JSON str).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmneuron.errors import MmneuronError

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("domain", pa.string()),
        ("question", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("image", pa.binary()),
        ("meta", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)


class SampleError(MmneuronError):
    """A sample or a samples file that cannot be used; the message names the file and sample."""


@dataclass
class Sample:
    sample_id: str
    domain: str
    question: str
    answers: list[str]
    image: bytes
    meta: dict = field(default_factory=dict)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Fixed settings so the same pixels always give the same bytes.
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


METADATA_KEY = "mmneuron"  # the parquet key-value entry holding the file's metadata (JSON)


def write_samples(
    samples: Iterable[Sample], path: str | Path, metadata: dict | None = None, rows_per_group: int = 256
) -> int:
    """Write samples to ``path`` (parquet) in row groups of ``rows_per_group``, so that memory holds
    one group's images at a time; refuse duplicate sample ids. ``metadata`` (a JSON-able dict, or
    a callable returning one, called once every sample is written) is stored as the file's
    key-value metadata, read back by :func:`read_metadata`. Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    duplicates: set[str] = set()
    with pq.ParquetWriter(path, SCHEMA) as writer:
        for group in _groups(samples, rows_per_group):
            for sample in group:
                (duplicates if sample.sample_id in seen else seen).add(sample.sample_id)
            writer.write_table(_table(group))
        if not seen:  # a file with no rows still has the schema
            writer.write_table(_table([]))
        if metadata is not None and not duplicates:
            values = metadata() if callable(metadata) else metadata
            writer.add_key_value_metadata({METADATA_KEY: json.dumps(values, sort_keys=True)})
    if duplicates:
        path.unlink()
        raise SampleError(f"{path}: duplicate sample ids {sorted(duplicates)[:5]}")
    return len(seen)


def _groups(samples: Iterable[Sample], size: int) -> Iterable[list[Sample]]:
    group = []
    for sample in samples:
        group.append(sample)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _table(samples: list[Sample]) -> pa.Table:
    rows = {
        "sample_id": [sample.sample_id for sample in samples],
        "domain": [sample.domain for sample in samples],
        "question": [sample.question for sample in samples],
        "answers": [list(sample.answers) for sample in samples],
        "image": [sample.image for sample in samples],
        "meta": [json.dumps(sample.meta, sort_keys=True) for sample in samples],
    }
    return pa.Table.from_pydict(rows, schema=SCHEMA)


def read_metadata(path: str | Path) -> dict:
    """The metadata :func:`write_samples` stored in a samples file ({} when it has none)."""
    path = Path(path)
    if not path.exists():
        raise SampleError(f"samples file not found: {path}")
    try:
        stored = pq.read_metadata(path).metadata or {}
    except (pa.ArrowException, OSError) as error:
        raise SampleError(f"{path}: not a readable parquet samples file ({type(error).__name__})") from None
    text = stored.get(METADATA_KEY.encode())
    return json.loads(text) if text else {}


def too_many_bad(skipped: list[dict], total: int, max_bad_share: float, what: str = "samples") -> str:
    """The one line of an error for more bad items than ``max_bad_share`` allows, naming the first five."""
    listed = "; ".join(f"{entry['sample_id']}: {entry['reason']}" for entry in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return f"{len(skipped)} of {total} {what} are bad, more than max_bad_share={max_bad_share}: {listed}{more}"


def read_samples(path: str | Path, limit: int | None = None) -> list[Sample]:
    """Read a samples file, checking its columns; ``limit`` keeps the first ``limit`` rows."""
    path = Path(path)
    if not path.exists():
        raise SampleError(f"samples file not found: {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise SampleError(f"{path}: not a readable parquet samples file ({type(error).__name__})") from None
    missing = [name for name in COLUMNS if name not in table.column_names]
    if missing:
        raise SampleError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)}")
    if limit is not None:
        table = table.slice(0, limit)
    samples = []
    for row in table.select(list(COLUMNS)).to_pylist():
        try:
            meta = json.loads(row["meta"]) if row["meta"] else {}
        except json.JSONDecodeError as error:
            raise SampleError(f"{path}: sample {row['sample_id']}: meta is not JSON ({error})") from None
        samples.append(Sample(**{**row, "answers": list(row["answers"] or []), "meta": meta}))
    return samples


def shard(items: Sequence, index: int, count: int, unit: int = 1) -> list:
    """Shard ``index`` of ``count`` (1-based): a contiguous block of whole units of ``unit`` items
    (the last unit may be short); with U units, units ``(i-1)*U//n`` to ``i*U//n``.

    The shards of one list are disjoint, cover it in order, and differ by at most one unit; shards
    1..k of 2k together are exactly shard 1 of 2 (the first half). With ``unit`` the batch size,
    every shard is a run of the batches one job over all items would make.
    """
    if not 1 <= index <= count or unit < 1:
        raise ValueError(f"shard {index}/{count} of units of {unit}: need 1 <= index <= count and unit >= 1")
    units = -(-len(items) // unit)
    return list(items[(index - 1) * units // count * unit : index * units // count * unit])


def decode_image(sample: Sample) -> Image.Image:
    """The sample's image as RGB; a missing or corrupt image raises SampleError naming the sample."""
    if not sample.image:
        raise SampleError(f"sample {sample.sample_id} ({sample.domain}): no image bytes")
    try:
        with Image.open(io.BytesIO(sample.image)) as image:
            return image.convert("RGB")
    except Exception as error:  # PIL raises several unrelated types for broken data
        # The error type, not its message: PIL's messages hold object addresses that vary per run.
        raise SampleError(
            f"sample {sample.sample_id} ({sample.domain}): corrupt image ({type(error).__name__})"
        ) from None


def usable(samples: Iterable[Sample]) -> tuple[list[Sample], list[dict]]:
    """The samples whose image decodes (decoded and let go, so memory holds one image at a time),
    and skip records for the others, as :func:`decode_images` gives them."""
    kept, skipped = [], []
    for sample in samples:
        found, _, bad = decode_images([sample])
        kept += found
        skipped += bad
    return kept, skipped


def decode_images(samples: Iterable[Sample]) -> tuple[list[Sample], list[Image.Image], list[dict]]:
    """Decode every sample's image: ``(kept samples, their images, skip records)``.

    A missing or corrupt image is logged and returned as ``{sample_id, domain, reason}`` for the
    caller to count and report, never dropped silently.
    """
    kept, images, skipped = [], [], []
    for sample in samples:
        try:
            images.append(decode_image(sample))
            kept.append(sample)
        except SampleError as error:
            log.warning("skipping %s", error)
            skipped.append({"sample_id": sample.sample_id, "domain": sample.domain, "reason": str(error)})
    return kept, images, skipped
