"""A contact sheet: a PNG grid of a few samples per domain with their questions and answers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt

from mmneuron.data.samples import Sample, SampleError, decode_image
from mmneuron.data.synthetic import DOMAIN_NAMES

CELL_INCHES = (1.9, 2.3)  # width, height of one image with its caption


def write_contact_sheet(samples_by_domain: dict[str, list[Sample]], path: str | Path, per_domain: int = 6) -> Path:
    """One row per domain (labelled with its name), ``per_domain`` captioned images per row."""
    if per_domain < 1:
        raise ValueError(f"per_domain must be at least 1, got {per_domain}")
    rows = [(domain, samples[:per_domain]) for domain, samples in samples_by_domain.items()]
    if not rows:
        raise SampleError(f"{path}: no samples to draw")
    figure, axes = plt.subplots(
        len(rows), per_domain, figsize=(CELL_INCHES[0] * per_domain + 0.6, CELL_INCHES[1] * len(rows)), squeeze=False
    )
    for (domain, samples), row in zip(rows, axes):
        for column, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if column < len(samples):
                sample = samples[column]
                ax.imshow(decode_image(sample), interpolation="nearest")
                question = textwrap.fill(sample.question, 24)
                ax.set_title(f"{question}\n→ {', '.join(sample.answers)}", fontsize=8)
            else:
                ax.axis("off")
        row[0].set_ylabel(DOMAIN_NAMES.get(domain, domain), fontsize=11, fontweight="bold")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
