"""Figures (matplotlib, non-interactive): every figure is written as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

# Fixed metadata, so the same figure gives the same PDF bytes.
_METADATA = {"pdf": {"CreationDate": None, "Producer": None, "Creator": "mmneuron"}, "png": {"Software": "mmneuron"}}


def save_figure(fig: plt.Figure, stem: str | Path, dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf``, close it, and return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = stem.parent / f"{stem.name}.{ext}"
        fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata=_METADATA[ext])
        paths.append(path)
    plt.close(fig)
    return paths
