"""What one slider move may make the browser redraw, and how a widget keeps within it.

plotly.js redraws a whole figure on any data change: about 50 us a marker and a few us a
line point on a 2-core laptop, besides a fixed ~20 ms (benchmarks/results/plotly_redraw.md,
docs/architecture.md). So every figure a slider or Play moves draws at most
:data:`MAX_DRAWN_MARKERS` markers and :data:`MAX_DRAWN_LINE_POINTS` line points in all: an
evenly spaced, deterministic subset of its samples (:func:`evenly_spaced`, sets sharing the
cap in proportion: :func:`marker_shares`) and fewer whole paths, never fewer time points.
Every number a widget shows still uses all samples, and its readout says what is drawn
(:func:`drawing_note`). Widgets take the caps as arguments, checked by :func:`checked_cap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_DRAWN_MARKERS = 400
MAX_DRAWN_LINE_POINTS = 4_000


def checked_cap(value: Any, name: str) -> int:
    """``value`` as an int >= 1 (a cap on the points a figure draws); ValueError otherwise."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1
    if not ok:
        raise ValueError(
            f"{name} (the most points a slider's figure draws) must be an integer >= 1, "
            f"got {value!r}"
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
