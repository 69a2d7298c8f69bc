"""The three stages of the logit lens (MMNeuron): alignment, information processing, token selection.

The rule, applied to one curve of mean image-token entropy per LLM layer ``e[0..L-1]``:

1. Flat curve: if ``max(e) - min(e) <= flat_tolerance * max|e|`` (or fewer than 3 layers), no stages.
2. ``m`` = the layer of the minimum (the first if tied); ``p`` = the layer of the maximum among
   layers ``0..m``; the fall is ``F = e[p] - e[m]``. If ``F <= flat_tolerance * max|e|`` the entropy
   never falls (e.g. a rising curve): no stages.
3. Information processing starts at the first layer after ``p`` where the entropy has dropped by
   more than ``start_fraction * F`` below ``e[p]``, and runs to the minimum ``m``.
   Alignment is every layer before it (it always holds at least layer 0).
4. Token selection is the layers after ``m`` when the entropy rises again there by at least
   ``min_rise * F`` (``max(e[m+1:]) - e[m]``). Otherwise there is no token-selection stage and the
   layers after ``m`` (if any) stay in the processing stage.

So the stages, when found, are contiguous and cover every layer. Example: ``e = 5, 5, 5, 4, 2, 1,
0.9, 0.8, 0.9, 1.1`` gives alignment 0-2 (the fall starts below 5 - 0.1 * 4.2), processing 3-7
(down to the minimum), token selection 8-9 (a rise of 0.3 >= 0.05 * 4.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mmneuron.defaults import LENS
from mmneuron.errors import MmneuronError

STAGES = ("alignment", "processing", "token_selection")


class StageError(MmneuronError):
    """A stage rule or an entropy curve the rule cannot be applied to."""


@dataclass(frozen=True)
class StageRule:
    start_fraction: float = LENS.stages.start_fraction  # share of the fall after which processing has begun
    min_rise: float = LENS.stages.min_rise  # final rise, as a share of the fall, that makes a token-selection stage
    flat_tolerance: float = LENS.stages.flat_tolerance  # range (or fall), as a share of the largest |entropy|: none

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not 0 <= value < 1:
                raise StageError(f"stage rule: {name} must lie in [0, 1), got {value}")


@dataclass(frozen=True)
class Stages:
    """Inclusive layer ranges ``(first, last)``, or None where the rule finds no such stage."""

    layers: int
    alignment: tuple[int, int] | None
    processing: tuple[int, int] | None
    token_selection: tuple[int, int] | None
    peak_layer: int | None
    min_layer: int | None
    note: str

    def stage_of(self, layer: int) -> str | None:
        for name in STAGES:
            span = getattr(self, name)
            if span is not None and span[0] <= layer <= span[1]:
                return name
        return None


def detect_stages(curve: Sequence[float], rule: StageRule = StageRule()) -> Stages:
    """The stages of one per-layer entropy curve by the module's rule (see the module docstring)."""
    e = np.asarray(curve, dtype=np.float64)
    if e.ndim != 1 or not np.isfinite(e).all():
        raise StageError(f"stage detection needs a finite 1-D curve, got {e.tolist()}")
    n = len(e)
    scale = np.abs(e).max() if n else 0.0
    if n < 3 or e.max() - e.min() <= rule.flat_tolerance * scale:
        reason = "fewer than 3 layers" if n < 3 else "flat curve (range within tolerance)"
        return Stages(n, None, None, None, None, None, f"no stages: {reason}")
    low = int(np.argmin(e))
    peak = int(np.argmax(e[: low + 1]))
    fall = e[peak] - e[low]
    if fall <= rule.flat_tolerance * scale:
        return Stages(n, None, None, None, peak, low, "no stages: entropy does not fall before its minimum")
    start = peak + 1 + int(np.argmax(e[peak + 1 : low + 1] < e[peak] - rule.start_fraction * fall))
    alignment = (0, start - 1)
    rise = e[low + 1 :].max() - e[low] if low < n - 1 else 0.0
    if low < n - 1 and rise >= rule.min_rise * fall:
        return Stages(n, alignment, (start, low), (low + 1, n - 1), peak, low, "three stages")
    note = (
        "no token-selection stage: minimum at the last layer"
        if low == n - 1
        else ("no token-selection stage: entropy does not rise after its minimum")
    )
    return Stages(n, alignment, (start, n - 1), None, peak, low, note)


def stage_table(lens_table: pd.DataFrame, scope: str = "image", rule: StageRule = StageRule()) -> pd.DataFrame:
    """Stage boundaries per domain from a logit-lens table (mean entropy of ``scope`` positions)."""
    part = lens_table[lens_table["scope"] == scope]
    if part.empty:
        raise StageError(f"the lens table has no rows for scope {scope!r}")
    rows = []
    for domain, group in part.sort_values("layer").groupby("domain", sort=True):
        stages = detect_stages(group["entropy_mean"].to_numpy(), rule)
        row = {"domain": domain, "scope": scope, "layers": stages.layers}
        for name in STAGES:
            span = getattr(stages, name)
            row[f"{name}_first"], row[f"{name}_last"] = span if span is not None else (None, None)
        rows.append(
            {**row, "peak_layer": stages.peak_layer, "min_layer": stages.min_layer, "note": stages.note, **asdict(rule)}
        )
    table = pd.DataFrame(rows)
    int_columns = [c for c in table.columns if c.endswith(("_first", "_last", "_layer"))]
    return table.astype({c: "Int64" for c in int_columns})
