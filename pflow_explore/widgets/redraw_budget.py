"""What one slider move may make the browser redraw, and how a widget keeps within it.

plotly.js redraws a whole figure on any data change: about 50 us a marker and a few us a
line point on a 2-core laptop, besides a fixed ~20 ms (benchmarks/results/plotly_redraw.md,
docs/architecture.md). So every figure a slider or Play moves draws at most
:data:`MAX_DRAWN_MARKERS` markers and :data:`MAX_DRAWN_LINE_POINTS` line points in all: an
evenly spaced, deterministic subset of its samples (:func:`evenly_spaced`, sets sharing the
cap in proportion: :func:`marker_shares`) and fewer whole paths, never fewer time points.
Every number a widget shows still uses all samples, and its readout says what is drawn
(:func:`drawing_note`). Widgets take the caps as arguments, checked by :func:`checked_cap`.
The subset helpers live in :mod:`pflow_explore.viz.thinning` (static figures use them too).
"""

from __future__ import annotations

from pflow_explore.viz.thinning import checked_cap, drawing_note, evenly_spaced, marker_shares

__all__ = [
    "MAX_DRAWN_LINE_POINTS",
    "MAX_DRAWN_MARKERS",
    "checked_cap",
    "drawing_note",
    "evenly_spaced",
    "marker_shares",
]

MAX_DRAWN_MARKERS = 400
MAX_DRAWN_LINE_POINTS = 4_000
