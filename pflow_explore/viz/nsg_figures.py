"""Figures of chapter 11 (NSG-VD): a detection metric against the reference-set size, AUROC
per detector and fake type, the cross-type matrix, frames beside their NSG maps.

Data in, go.Figure out; the arguments are plain dicts, lists and tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import diverging, unlabel_rgb
from torch import Tensor

from pflow_explore.viz import style
from pflow_explore.viz.images import image_grid_figure

DIVERGING = diverging.RdBu  # ColorBrewer, red (low) to blue (high)
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


def diverging_rgb(values: Any) -> np.ndarray:
    """``values`` (...,) in [-1, 1] -> RGB (..., 3) in [-1, 1] on ColorBrewer's RdBu, blue
    at -1, white at 0, red at +1 (plotly's "RdBu" heatmaps: low blue, high red)."""
    stops = np.array([unlabel_rgb(c) for c in DIVERGING[::-1]], dtype=float)  # blue -> red
    at = (np.clip(np.asarray(values, dtype=float), -1, 1) + 1) / 2 * (len(stops) - 1)
    lo = np.floor(at).astype(int).clip(0, len(stops) - 2)
    frac = (at - lo)[..., None]
    rgb = stops[lo] * (1 - frac) + stops[lo + 1] * frac
    return rgb / 127.5 - 1


def frames_and_nsg_figure(
    videos: Mapping[str, Tensor], nsg_maps: Mapping[str, Tensor], index: int = 0
) -> go.Figure:
    """Rows: one video per kind, videos {kind: (k, T, S, S)}; its T frames (grey, each
    scaled to its own range) and then its T NSG maps (each scaled by its largest |value|:
    blue < 0, white 0, red > 0) from nsg_maps {kind: (k, T, S, S)}.

    One ``go.Image`` for the whole grid (``viz.image_grid_figure``): as 2 T heatmaps per
    kind in make_subplots (80 subplots for five kinds) it took a dashboard 0.6 s to draw."""
    tiles, titles = [], []
    for kind in videos:
        frames = videos[kind][index].detach().cpu().double().numpy()  # (T, S, S)
        maps = nsg_maps[kind][index].detach().cpu().double().numpy()
        low = frames.min(axis=(1, 2), keepdims=True)
        span = np.maximum(frames.max(axis=(1, 2), keepdims=True) - low, 1e-12)
        gray = 2 * (frames - low) / span - 1
        tiles += [np.repeat(g[None], 3, axis=0) for g in gray]
        size = np.maximum(np.abs(maps).max(axis=(1, 2), keepdims=True), 1e-12)
        tiles += [np.moveaxis(diverging_rgb(m), -1, 0) for m in maps / size]
        titles += [kind] + [""] * (2 * len(frames) - 1)
    per_row = len(titles) // len(videos)
    title = "Frames (left half) and NSG maps (right half), one video per kind"
    return image_grid_figure(
        np.stack(tiles), nrow=per_row, titles=titles, title=title, tile_px=1000 // per_row
    )
