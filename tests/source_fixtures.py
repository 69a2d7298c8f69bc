"""Small builders for the dataset-source tests (light: PIL only, no model libraries)."""

from __future__ import annotations

import io
import random

from PIL import Image

from mmneuron.cli import main
from mmneuron.data.samples import read_metadata, read_samples

# A JPEG's first bytes and then nothing: PIL opens it but cannot decode it.
CORRUPT = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 40


def image_bytes(seed: int, fmt: str = "JPEG", size=(24, 16)) -> bytes:
    """Encoded bytes of a small image whose pixels depend on ``seed``."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    image.putpixel((0, 0), (seed % 256, 7, 9))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def prepare(*argv) -> tuple[list, dict]:
    """Run ``mmneuron prepare`` with ``argv`` (strings or paths; ``--out`` among them) and read back
    the samples and the metadata it wrote."""
    argv = [str(arg) for arg in argv]
    assert main(["prepare", *argv, "--no-progress"]) == 0
    out = argv[argv.index("--out") + 1]
    return read_samples(out), read_metadata(out)


def expected_draw(ids: list[str], n: int, seed: int) -> list[str]:
    """The first ``n`` ids in the documented draw order, computed here: random.Random(seed).shuffle
    of the listing's positions."""
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    return [ids[i] for i in order[:n]]
