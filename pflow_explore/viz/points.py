"""2D samples and their trajectories: markers, paths, and the plane they live in.

Plain ``go.Scatter`` (SVG), not ``go.Scattergl``: the dashboards are tested in headless
Chromium without a GPU, where WebGL may be unavailable and a WebGL trace draws nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from pflow_explore.viz.arrays import as_numpy, check_shape, padded_range, polylines
from pflow_explore.viz.style import BLUE, figure_layout, margins
from pflow_explore.viz.style import TEMPLATE as TEMPLATE  # its old home: keep the name

SAMPLE_COLOR = BLUE
PATH_COLOR = "rgba(90, 90, 90, 0.35)"


def plane_layout(
    title: str | None = None,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    height: int = 460,
) -> dict[str, Any]:
    """Layout for the plane R^2 with one unit on x as long as one unit on y (equal aspect).

    ``constrain="domain"`` shrinks the plotting area rather than widening the ranges, so the
    requested limits stay exactly visible.
    """
    return figure_layout(
        title,
        height=height,
        margin=margins(top=50 if title else 20),
        xaxis=dict(range=list(xlim) if xlim else None, constrain="domain", zeroline=False),
        yaxis=dict(
            range=list(ylim) if ylim else None,
            scaleanchor="x",
            scaleratio=1,
            constrain="domain",
            zeroline=False,
        ),
        showlegend=False,
    )


def points_trace(
    points: Any, name: str = "samples", color: str = SAMPLE_COLOR, size: float = 4
) -> go.Scatter:
    """Markers at ``points`` (n, 2)."""
    p = as_numpy(points, "points")
    check_shape(p, "points", (None, 2), "(n, 2)")
    return go.Scatter(
        x=p[:, 0],
        y=p[:, 1],
        mode="markers",
        name=name,
        marker=dict(color=color, size=size),
        hovertemplate="(%{x:.3f}, %{y:.3f})<extra>" + name + "</extra>",
    )


def samples_figure(traces: Any, title: str | None, height: int) -> go.Figure:
    """Sample sets told apart by a legend: ``traces`` (e.g. :func:`points_trace`) under
    :func:`~pflow_explore.viz.style.figure_layout` ``(title, height)``, one unit on x as long
    as one on y. Unlike :func:`plane_layout`: the legend shows and plotly picks the ranges."""
    fig = go.Figure(list(traces), layout=figure_layout(title, height))
    return fig.update_yaxes(scaleanchor="x", scaleratio=1)


def trajectories_trace(
    trajectories: Any, name: str = "paths", color: str = PATH_COLOR, width: float = 1
) -> go.Scatter:
    """All m paths of ``trajectories`` (T+1, m, 2) as one line trace.

    The trace holds m (T+2) points: each path's T+1 points, then a NaN break
    (see :func:`pflow_explore.viz.arrays.polylines`).
    """
    paths = as_numpy(trajectories, "trajectories")
    check_shape(paths, "trajectories", (None, None, 2), "(T+1, m, 2)")
    x, y = polylines(paths)
    return go.Scatter(
        x=x,
        y=y,
        mode="lines",
        name=name,
        line=dict(color=color, width=width),
        hoverinfo="skip",  # hovering 10^5 line points is slow and says nothing useful
    )


def points_figure(
    points: Any,
    trajectories: Any = None,
    title: str | None = None,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    color: str = SAMPLE_COLOR,
    size: float = 4,
) -> go.Figure:
    """Samples ``points`` (n, 2) as markers over optional ``trajectories`` (T+1, m, 2).

    The paths are drawn first (one trace, underneath), the samples last. Limits default to
    the extent of everything drawn plus 5 %.
    """
    samples = points_trace(points, color=color, size=size)
    traces = [samples]
    extent = [np.stack([samples.x, samples.y], axis=1)]
    if trajectories is not None:
        paths = trajectories_trace(trajectories)
        traces.insert(0, paths)
        extent.append(np.stack([paths.x, paths.y], axis=1))
    both = np.concatenate(extent)
    xlim = xlim or padded_range(both[:, 0])
    ylim = ylim or padded_range(both[:, 1])
    return go.Figure(data=traces, layout=plane_layout(title, xlim, ylim))
