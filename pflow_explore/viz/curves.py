"""Line charts of the chapters: loss against step, error against steps or noise level.

Each chapter draws a few such charts of short series (tens to thousands of points); the
series are passed to plotly as plain floats (:func:`pflow_explore.viz.arrays.plain_floats`)
and the chart takes its look from :func:`pflow_explore.viz.style.curves_layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from pflow_explore.viz.arrays import plain_floats
from pflow_explore.viz.style import curves_layout


def curve_trace(x: Any, y: Any, name: str | None = None, **options: Any) -> go.Scatter:
    """One series y(x) as lines with markers; ``options`` are go.Scatter's (mode, line, ...).

    x, y: (n,) tensors or array-likes; NaN becomes a gap (None) in the line.
    """
    return go.Scatter(
        x=plain_floats(x), y=plain_floats(y), name=name, **{"mode": "lines+markers", **options}
    )


def curves_figure(traces: Sequence[go.Scatter], title: str | None = None, **axes: Any) -> go.Figure:
    """A line chart of ``traces`` (e.g. :func:`curve_trace`) with titled, linear or log axes.

    ``axes``: :func:`pflow_explore.viz.style.curves_layout`'s x_title, y_title, log_x,
    log_y, height (default 380) and width (default 560).
    """
    return go.Figure(data=list(traces), layout=curves_layout(title, **axes))
