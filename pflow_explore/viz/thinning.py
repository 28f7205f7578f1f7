"""Which markers a figure draws when it has more samples than the browser draws quickly.

plotly.js draws each SVG marker as its own element: about 20-50 us a marker on a 2-core
laptop (benchmarks/results/plotly_redraw.md), so a figure of 14,000 markers holds a
dashboard's main thread for 0.3-0.7 s before any slider can answer. A figure draws at
most a budget of markers (:data:`MAX_FIGURE_MARKERS` for a page's static figures; the
widgets' per-move caps are in ``widgets/redraw_budget.py``): an evenly spaced,
deterministic subset of each sample set (:func:`evenly_spaced`), the sets sharing the
budget in proportion (:func:`marker_shares`), and the figure says what it draws
(:func:`drawing_note`). Every number shown beside it still uses all samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

MAX_FIGURE_MARKERS = 3_000
# per-point properties of a scatter trace, cut together with x and y
POINT_PROPERTIES = ("x", "y", "text", "hovertext", "customdata", "ids")
MARKER_PROPERTIES = ("color", "size", "symbol", "opacity")


def checked_cap(value: Any, name: str) -> int:
    """``value`` as an int >= 1 (a cap on the points a figure draws); ValueError otherwise."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1
    if not ok:
        raise ValueError(
            f"{name} (the most points a figure draws) must be an integer >= 1, got {value!r}"
        )
    return int(value)


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """min(k, n) evenly spaced indices of range(n), sorted, the first and last among them:
    the same n and k always give the same subset (no random draw); all n when k >= n."""
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def marker_shares(counts: Sequence[int], cap: int) -> list[int]:
    """How many of each marker set to draw: all of them when they sum to at most ``cap``,
    else each cut in proportion (rounded down, at least 1 of a non-empty set)."""
    total = sum(counts)
    if total <= cap:
        return [int(c) for c in counts]
    return [min(int(c), max(1, int(c) * cap // total)) if c else 0 for c in counts]


def drawing_note(*parts: tuple[int, int, str]) -> str:
    """The note 'drawing 400 of 1,024 particles and ...' for the (drawn, total, noun) parts
    that draw a subset; the empty string when every part draws all."""
    cut = [f"{drawn:,} of {total:,} {noun}" for drawn, total, noun in parts if drawn < total]
    return "drawing " + " and ".join(cut) if cut else ""


def _is_markers(trace: Any) -> bool:
    return isinstance(trace, go.Scatter) and trace.mode == "markers" and trace.x is not None


def _cut(value: Any, n: int, keep: np.ndarray) -> Any:
    """``value`` at the rows ``keep`` when it is one entry per point (length n), else as is."""
    if value is None or isinstance(value, str) or np.ndim(value) == 0 or len(value) != n:
        return value
    return np.asarray(value, dtype=object if isinstance(value, tuple | list) else None)[keep]


def thin_markers(traces: Sequence[Any], cap: int = MAX_FIGURE_MARKERS) -> str:
    """Cut the marker-only scatter traces among ``traces`` (in place) to at most ``cap``
    markers in all, each to an evenly spaced subset of its points (x, y and every
    per-point property with them); line traces are left whole. Returns what was drawn, as
    a note for the figure ('' when nothing was cut): 'drawing 428 of 2,000 points of each
    set' when every set was cut alike, else 'drawing 3,000 of 14,000 points'."""
    cap = checked_cap(cap, "the marker budget")
    marked = [t for t in traces if _is_markers(t)]
    counts = [len(t.x) for t in marked]
    shares = marker_shares(counts, cap)
    for trace, n, k in zip(marked, counts, shares, strict=True):
        if k >= n:
            continue
        keep = evenly_spaced(n, k)
        cut = {p: _cut(trace[p], n, keep) for p in POINT_PROPERTIES}
        cut["marker"] = {p: _cut(trace.marker[p], n, keep) for p in MARKER_PROPERTIES}
        trace.update(**{p: v for p, v in cut.items() if v is not None})
    if sum(shares) == sum(counts):
        return ""
    pairs = set(zip(shares, counts, strict=True))
    if len(marked) > 1 and len(pairs) == 1:
        ((k, n),) = pairs
        return drawing_note((k, n, "points of each set"))
    return drawing_note((sum(shares), sum(counts), "points"))
