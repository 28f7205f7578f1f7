"""Chapter 04's figures of consistency trajectory models: paths of a teacher next to a
student's few jumps, the score error of each network against the noise level, and
gamma-sampling with the exact jump against the data-vs-data band.

Time convention: diffusion, EDM's x_t = x0 + t z with the time equal to the noise level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from pflow_explore.viz.curves import curve_trace, curves_figure
from pflow_explore.viz.panels import panel_grid
from pflow_explore.viz.points import points_trace, trajectories_trace
from pflow_explore.viz.style import BLUE, GREEN, RED, curves_layout


def paths_figure(paths: Mapping[str, Any], titles: Sequence[str]) -> go.Figure:
    """One panel per entry of ``paths`` (label -> states (K + 1, m, 2), x_T first, left out:
    at t = T it lies far off the picture) with its end points; teacher green, others blue."""
    panels = []
    for k, p in paths.items():
        color = GREEN if k == "teacher" else BLUE
        line = "rgba(44,160,44,0.5)" if k == "teacher" else "rgba(31,119,180,0.5)"
        panels.append([trajectories_trace(p[1:], k, line), points_trace(p[-1], "end", color, 4)])
    title = "From the same noise: small steps vs a few jumps"
    return panel_grid([panels], list(titles), (0.05, 0.05), dict(range=[-4, 4]), height=380,
                      width=380 * len(panels), title=title)  # fmt: skip


def score_error_figure(
    sigmas: Sequence[float], errors: Mapping[str, Any], colors: Mapping[str, str]
) -> go.Figure:
    """Relative score error |s_theta - s*| / |s*| of each network (label -> (K,)) at each
    noise level of ``sigmas`` (K,), log-log."""
    traces = [
        curve_trace(list(sigmas), v, k, line=dict(color=colors[k])) for k, v in errors.items()
    ]
    title = "The score each network holds: |s_theta - s*| / |s*|"
    return curves_figure(traces, title, x_title="noise level sigma", y_title="relative error",
                         log_x=True, log_y=True)  # fmt: skip


def exact_gamma_figure(
    energy: Mapping[float, float], control: float, threshold: float
) -> go.Figure:
    """Energy distance to the data of gamma-sampling with the exact jump (gamma -> value),
    with the one-Euler-step control (red) and the data-vs-data bound (dotted)."""
    names = [f"gamma {g:g}" for g in energy] + ["control: Euler jump"]
    colors = [BLUE] * len(energy) + [RED]
    fig = go.Figure(go.Bar(x=names, y=[*energy.values(), control], marker_color=colors))
    fig.add_hline(y=threshold, line_dash="dot", annotation_text="data vs data: mean + 3 SD")
    title = "Exact jumps keep the data for every gamma"
    return fig.update_layout(curves_layout(title, y_title="energy distance", log_y=True))
