"""Sample quality against sampling cost: curves over step counts, one-step markers, a floor.

The figure of few-step generation papers (rectified flow, consistency models, distillation):
a quality measure (FD, FID, W2; lower is better) of multi-step samplers against their
number of steps on log axes, one-step students as stars at one step, and the value the
measure gives the data themselves as a dotted floor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from pflow_explore.viz.arrays import plain_floats
from pflow_explore.viz.curves import curve_trace, curves_figure
from pflow_explore.viz.style import marker_style


def quality_vs_steps_figure(
    curves: Mapping[str, tuple[Any, Any, Sequence[str]]],
    one_step: Mapping[str, tuple[float, str]],
    colors: Mapping[str, str],
    floor: float = math.nan,
    floor_text: str = "",
    title: str | None = None,
    **axes: Any,
) -> go.Figure:
    """Quality against steps, log-log.

    curves: name -> (steps (K,), quality (K,), hover text per point); one_step: name ->
    (quality, hover text), drawn as a star at one step; colors: name -> colour of each;
    floor: a dotted horizontal line (left out when NaN) labelled ``floor_text``; axes:
    :func:`viz.curves_figure`'s x_title, y_title, height, width.
    """
    traces = [
        curve_trace(steps, q, name, line=dict(color=colors[name]), text=list(text))
        for name, (steps, q, text) in curves.items()
    ]
    for name, (q, text) in one_step.items():
        star = marker_style(colors[name], 12, symbol="star")
        traces.append(go.Scatter(x=[1], y=plain_floats([q]), name=name, text=[text], **star))
    fig = curves_figure(traces, title, log_x=True, log_y=True, **axes)
    if math.isfinite(floor):
        position = dict(annotation_position="top left", annotation_text=floor_text)
        fig.add_hline(y=floor, line_dash="dot", **position)
    return fig
