"""Figures of chapter 10's clipart animations: a mesh as one line trace, the skeleton, Bezier
control polygons, filmstrips of frames and the ablation's metrics with error bars.

Data in (tensors or arrays: vertices (N, 2), faces (T, 3), keypoints (K, 2), control
points (K, 4, 2)), plotly out; nothing is computed here but the drawing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pflow_explore.datasets.motions import BONES
from pflow_explore.viz.arrays import polyline_lists
from pflow_explore.viz.style import BLUE, GRAY, ORANGE, RED, TEMPLATE, line_style, marker_style

MESH_COLOR = "rgba(31, 119, 180, 0.55)"


def mesh_xy(V: Any, faces: Any) -> tuple[list, list]:
    """x, y lists of every triangle's outline (a, b, c, a, None): one line trace."""
    v = np.asarray(V, dtype=np.float64)[np.asarray(faces)]  # (T, 3, 2)
    return polyline_lists(np.concatenate([v, v[:, :1]], 1), decimals=4)


def skeleton_xy(keypoints: Any) -> tuple[list, list]:
    """x, y lists of the bones (parent, child, None)."""
    return polyline_lists(np.asarray(keypoints, dtype=np.float64)[np.asarray(BONES)])


def controls_xy(controls: Any) -> tuple[list, list]:
    """x, y lists of each keypoint's Bezier control polygon P0-P1-P2-P3 (K, 4, 2)."""
    return polyline_lists(controls)


def frame_traces(V: Any, faces: Any, keypoints: Any, controls: Any | None = None) -> list:
    """The traces of one frame: mesh, skeleton, keypoints (and control polygons)."""
    mx, my = mesh_xy(V, faces)
    sx, sy = skeleton_xy(keypoints)
    k = np.asarray(keypoints, dtype=np.float64)
    out = [
        go.Scatter(x=mx, y=my, name="mesh", hoverinfo="skip", **line_style(MESH_COLOR, 0.7)),
        go.Scatter(x=sx, y=sy, name="skeleton", hoverinfo="skip", **line_style(RED, 2)),
        go.Scatter(
            x=k[:, 0].tolist(), y=k[:, 1].tolist(), name="keypoints", **marker_style(RED, 6)
        ),
    ]
    if controls is not None:
        cx, cy = controls_xy(controls)
        out.append(
            go.Scatter(
                x=cx,
                y=cy,
                name="Bezier controls",
                mode="lines+markers",
                line=dict(color=ORANGE, dash="dot", width=1),
                marker=dict(color=ORANGE, size=5),
            )
        )
    return out


def filmstrip_figure(
    rows: Mapping[str, tuple[Any, Any]],
    faces: Any,
    frames: Sequence[int],
    title: str = "",
    extent: float = 1.3,
) -> go.Figure:
    """Rows of frames: ``rows`` {label: (vertices (F, N, 2), keypoints (F, K, 2))}."""
    fig = make_subplots(
        len(rows),
        len(frames),
        horizontal_spacing=0.01,
        vertical_spacing=0.03,
        column_titles=[f"frame {f}" for f in frames],
        row_titles=list(rows),
    )
    for r, (V, kp) in enumerate(rows.values(), 1):
        for c, f in enumerate(frames, 1):
            for tr in frame_traces(V[f], faces, kp[f]):
                tr.showlegend = r == c == 1
                fig.add_trace(tr, r, c)
    fig.update_xaxes(range=[-extent, extent], visible=False)
    fig.update_yaxes(range=[-extent, extent], visible=False)
    for i in range(1, len(rows) * len(frames) + 1):
        fig.update_yaxes(
            scaleanchor=f"x{'' if i == 1 else i}",
            row=(i - 1) // len(frames) + 1,
            col=(i - 1) % len(frames) + 1,
        )
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        height=200 * len(rows) + 60,
        width=140 * len(frames) + 160,
        margin=dict(l=20, r=60, t=70, b=20),
        legend=dict(orientation="h", y=-0.02),
    )
    return fig


def ablation_figure(
    means: Mapping[str, Mapping[str, float]],
    ses: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    title: str = "",
) -> go.Figure:
    """One panel per metric: its mean per variant with +- SE bars (``means[variant][metric]``)."""
    fig = make_subplots(1, len(metrics), subplot_titles=list(metrics), horizontal_spacing=0.06)
    colors = [GRAY, BLUE, ORANGE, RED]
    for j, m in enumerate(metrics, 1):
        for i, v in enumerate(means):
            fig.add_trace(
                go.Bar(
                    x=[v],
                    y=[means[v][m]],
                    name=v,
                    marker_color=colors[i % 4],
                    error_y=dict(type="data", array=[ses[v][m]]),
                    showlegend=j == 1,
                ),
                1,
                j,
            )
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        height=330,
        width=230 * len(metrics) + 100,
        legend=dict(orientation="h", y=-0.08),
    )
    return fig
