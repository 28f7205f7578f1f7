"""Figures made of several panels, and grouped bars: the chapters' composite layouts.

``panel_grid`` lays out rows of equal-aspect 2D panels (samples, trajectories) with one
title per panel; ``bars_figure`` draws grouped bars (one series per method, one bar per
case), e.g. a metric per target and per rectification round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pflow_explore.viz.arrays import plain_floats
from pflow_explore.viz.style import TEMPLATE
from pflow_explore.viz.thinning import MAX_FIGURE_MARKERS, thin_markers


def panel_grid(
    panels: Sequence[Sequence[Sequence[go.Scatter]]],
    titles: Sequence[str],
    spacing: tuple[float, float] = (0.04, 0.08),
    axes: Mapping[str, Any] | None = None,
    font: int = 10,
    equal_aspect: bool = True,
    max_markers: int = MAX_FIGURE_MARKERS,
    **layout: Any,
) -> go.Figure:
    """Rows of panels: ``panels[row][col]`` is the list of traces of one panel.

    titles: one per panel, row by row; spacing: (horizontal, vertical) fractions between
    panels; axes: options for every x and y axis (e.g. ``dict(visible=False)``);
    equal_aspect: one unit on y as long as one on x in every panel (the plane R^2);
    max_markers: the most markers the figure draws in all (``viz.thinning``): marker
    traces beyond it are cut to evenly spaced subsets and the title says so;
    ``layout``: go.Layout options (height, width, title, ...). No legend.
    """
    rows = len(panels)
    cols = len(panels[0]) if rows else 0
    if rows == 0 or cols == 0 or any(len(r) != cols for r in panels):
        raise ValueError("panels must be a non-empty rows x cols nesting of trace lists")
    if len(titles) != rows * cols:
        raise ValueError(f"need {rows * cols} titles (one per panel), got {len(titles)}")
    fig = make_subplots(
        rows,
        cols,
        subplot_titles=list(titles),
        horizontal_spacing=spacing[0],
        vertical_spacing=spacing[1],
    )
    for i, (r, c) in enumerate(((r, c) for r in range(rows) for c in range(cols)), start=1):
        for trace in panels[r][c]:
            fig.add_trace(trace, row=r + 1, col=c + 1)
        fig.update_xaxes(**(axes or {}), row=r + 1, col=c + 1)
        aspect = dict(scaleanchor=f"x{i}", scaleratio=1) if equal_aspect else {}
        fig.update_yaxes(**(axes or {}), **aspect, row=r + 1, col=c + 1)
    note = thin_markers(fig.data, max_markers)
    fig.update_annotations(font_size=font)
    fig.update_layout(template=TEMPLATE, showlegend=False, **layout)
    if note:
        title = fig.layout.title.text
        fig.update_layout(title_text=f"{title}<br><sup>{note}</sup>" if title else note)
    return fig


def bars_figure(
    groups: Mapping[str, Mapping[str, float]],
    colors: Mapping[str, str] | None = None,
    **layout: Any,
) -> go.Figure:
    """Grouped bars: ``groups[series][case]`` is one bar's height; one colour per series.
    A NaN height (nothing measured) becomes a missing bar, as in every figure of the package.

    ``layout``: go.Layout options (title, height, yaxis, ...).
    """
    colors = colors or {}
    fig = go.Figure(
        [
            go.Bar(name=k, x=list(g), y=plain_floats(list(g.values())), marker_color=colors.get(k))
            for k, g in groups.items()
        ]
    )
    fig.update_layout(template=TEMPLATE, barmode="group", **layout)
    return fig
