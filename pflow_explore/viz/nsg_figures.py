"""Figures of chapter 11 (NSG-VD): a detection metric against the reference-set size, AUROC
per detector and fake type, the cross-type matrix, frames beside their NSG maps.

Data in, go.Figure out; the arguments are plain dicts, lists and tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from pflow_explore.viz import style

PALETTE = (style.BLUE, "#17becf", style.GREEN, style.ORANGE, style.GRAY, style.RED)


def colors(names: Sequence[str]) -> dict[str, str]:
    """One palette colour per name, in order."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def metric_vs_size_figure(
    sizes: Sequence[int],
    curves: Mapping[str, Sequence[float]],
    ses: Mapping[str, Sequence[float]],
    metric: str,
) -> go.Figure:
    """``metric`` against the number of reference videos: curves {detector: values}, with
    error bars ``ses`` {detector: SEs}."""
    c, fig = colors(list(curves)), go.Figure()
    for name, ys in curves.items():
        fig.add_trace(
            go.Scatter(
                x=list(sizes),
                y=list(ys),
                name=name,
                mode="lines+markers",
                line=dict(color=c[name]),
                error_y=dict(array=list(ses[name])),
            )
        )
    fig.update_layout(style.figure_layout(f"{metric} vs number of reference videos", 360))
    fig.update_xaxes(title_text="reference videos", type="log")
    return fig.update_yaxes(title_text=metric)


def auroc_bars_figure(per_type: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """AUROC {detector: {fake kind: AUROC}} as grouped bars, chance marked."""
    c = colors(list(per_type))
    bars = [
        go.Bar(name=n, x=list(v), y=list(v.values()), marker_color=c[n])
        for n, v in per_type.items()
    ]
    fig = go.Figure(bars)
    fig.add_hline(y=0.5, line_dash="dot", annotation_text="chance")
    fig.update_layout(style.figure_layout("AUROC by fake type and detector", 380), barmode="group")
    return fig.update_yaxes(range=[0, 1.02], title_text="AUROC")


def cross_type_figure(cross: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """AUROC of a detector trained on one fake type (rows) tested on each type (columns)."""
    rows, cols = list(cross), list(next(iter(cross.values())))
    z = [[cross[a][b] for b in cols] for a in rows]
    text = [[f"{v:.2f}" for v in r] for r in z]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=cols,
            y=rows,
            zmin=0,
            zmax=1,
            colorscale="RdBu",
            text=text,
            texttemplate="%{text}",
        )
    )
    fig.update_layout(
        style.figure_layout("Cross-type AUROC (trained on row, tested on column)", 360)
    )
    fig.update_xaxes(title_text="tested on")
    return fig.update_yaxes(autorange="reversed", title_text="trained on")


def frames_and_nsg_figure(
    videos: Mapping[str, Tensor], nsg_maps: Mapping[str, Tensor], index: int = 0
) -> go.Figure:
    """Rows: one video per kind, videos {kind: (k, T, S, S)}; its T frames (grey) and then
    its T NSG maps (red-blue, 0 white) from nsg_maps {kind: (k, T, S, S)}."""
    kinds = list(videos)
    frames = videos[kinds[0]].shape[1]
    fig = make_subplots(len(kinds), 2 * frames, horizontal_spacing=0.004, vertical_spacing=0.02)
    for r, k in enumerate(kinds):
        for t in range(frames):
            z = videos[k][index, t].flip(0).tolist()
            fig.add_trace(go.Heatmap(z=z, colorscale="gray", showscale=False), r + 1, t + 1)
            z = nsg_maps[k][index, t].flip(0).tolist()
            heat = go.Heatmap(z=z, zmid=0, colorscale="RdBu", showscale=False)
            fig.add_trace(heat, r + 1, frames + t + 1)
        fig.update_yaxes(title_text=k, row=r + 1, col=1)
    fig.update_xaxes(visible=False).update_yaxes(showticklabels=False)
    title = "Frames (left half) and NSG maps (right half), one video per kind"
    return fig.update_layout(style.figure_layout(title, 80 * len(kinds) + 70), width=1100)
