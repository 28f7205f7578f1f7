"""Figure builders for chapter 07 (gradients through the probability flow): data in,
go.Figure out. Peak memory and time against steps per route, and 2D samples before and
after fine-tuning with the goal's box (errors against steps: viz.curves)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from pflow_explore.viz import style
from pflow_explore.viz.arrays import plain_floats
from pflow_explore.viz.points import points_trace, samples_figure


def memory_time_figure(
    steps: Sequence[int],
    peak: Mapping[str, Sequence[float]],
    seconds: Mapping[str, Sequence[float]],
    colors: Mapping[str, str],
    title: str,
) -> go.Figure:
    """Peak memory (MiB, left) and time (s, right) against steps, one line per route."""
    fig = make_subplots(1, 2, subplot_titles=("peak MiB", "CPU s"), horizontal_spacing=0.12)
    for r in peak:
        for col, ys in ((1, peak[r]), (2, seconds[r])):
            trace = go.Scatter(
                x=list(steps),
                y=plain_floats(ys),
                name=r,
                mode="lines+markers",
                legendgroup=r,
                showlegend=col == 1,
                line=dict(color=colors.get(r, style.BLUE)),
            )
            fig.add_trace(trace, 1, col)
    fig.update_layout(style.figure_layout(title, 360))
    return fig.update_xaxes(title_text="steps")


def box_figure(
    before: Tensor, after: Tensor, low: Sequence[float], high: Sequence[float], title: str
) -> go.Figure:
    """2D samples before (gray) and after (blue) with the box [low, high] in red."""
    samples = [
        points_trace(before[:1000].float(), "before", style.GRAY, 3),
        points_trace(after[:1000].float(), "after", style.BLUE, 3),
    ]
    return samples_figure(samples, title, 420).add_shape(
        type="rect", x0=low[0], y0=low[1], x1=high[0], y1=high[1], line=dict(color=style.RED)
    )
