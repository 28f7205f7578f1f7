"""Figure builders for chapter 08 (CODE editing): data in, go.Figure out. Fidelity-realism
trade-off curves (closed form and digits), the 2D mixture before / after, digit grids
before / after / SDEdit, and clip rates against the level."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
import torch
from torch import Tensor

from pflow_explore.viz import style
from pflow_explore.viz.arrays import plain_floats, polyline_lists
from pflow_explore.viz.images import image_grid_figure
from pflow_explore.viz.points import points_trace, samples_figure

METHOD_COLORS = {"CODE": style.BLUE, "CODE, no clip": style.PURPLE, "SDEdit": style.ORANGE}
PALETTE = [
    style.BLUE,
    style.GREEN,
    style.PURPLE,
    style.RED,
    style.GRAY,
    "#17becf",
    "#8c564b",
    "#bcbd22",
]


def tradeoff_figure(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    x_key: str,
    y_key: str,
    title: str,
    x_title: str,
    y_title: str,
) -> go.Figure:
    """One line per curve (label -> {x_key: [...], y_key: [...]}); SDEdit dashed orange."""
    fig = go.Figure()
    for i, (label, c) in enumerate(curves.items()):
        sde = label == "SDEdit"
        line = dict(
            color=style.ORANGE if sde else PALETTE[i % len(PALETTE)], dash="dash" if sde else None
        )
        fig.add_trace(
            go.Scatter(
                x=plain_floats(c[x_key]),
                y=plain_floats(c[y_key]),
                name=label,
                mode="lines+markers",
                line=line,
                marker=dict(size=5),
            )
        )
    fig.update_layout(style.figure_layout(title, 400))
    fig.update_xaxes(title_text=x_title)
    return fig.update_yaxes(title_text=y_title, type="log")


def mixture_figure(
    clean: Tensor | None, inputs: Tensor, code: Tensor, sdedit: Tensor | None
) -> go.Figure:
    """Clean points (gray), corrupted inputs (red), CODE (blue) and SDEdit (orange) outputs;
    a thin segment from each of the first 60 inputs to its CODE output."""
    traces = []
    if clean is not None:
        traces.append(points_trace(clean, "clean", "rgba(127,127,127,0.4)", 3))
    k = min(60, len(inputs))
    seg_x, seg_y = polyline_lists(torch.stack([inputs[:k], code[:k]], 1))
    seg_style = style.line_style("rgba(31,119,180,0.3)", 1)
    traces.append(go.Scatter(x=seg_x, y=seg_y, name="input -> CODE", **seg_style))
    traces.append(points_trace(inputs, "corrupted input", style.RED, 3))
    traces.append(points_trace(code, "CODE", style.BLUE, 3))
    if sdedit is not None:
        traces.append(points_trace(sdedit, "SDEdit", style.ORANGE, 3))
    return samples_figure(traces, "2D ring: corrupted points edited with the exact score", 440)


def digits_tradeoff(
    rows: Mapping[str, Sequence],
    ref_input: Mapping[str, float],
    ref_clean: Mapping[str, float],
    kind: str,
    x_key: str = "to_input",
    y_key: str = "fd",
) -> go.Figure:
    """Every edit of one corruption: distance to the input against Frechet distance, one
    trace per method (CODE points labelled t_L / K / step), the input and the clean digits."""
    fig = go.Figure()
    for m, color in METHOD_COLORS.items():
        idx = [i for i, v in enumerate(rows["method"]) if v == m]
        text = [f"t_L {rows['t_L'][i]:g}, K {rows['K'][i]}, step {rows['step'][i]:g}" for i in idx]
        fig.add_trace(
            go.Scatter(
                x=plain_floats([rows[x_key][i] for i in idx]),
                y=plain_floats([rows[y_key][i] for i in idx]),
                error_y=dict(
                    array=plain_floats([rows[y_key + "_se"][i] for i in idx]), thickness=1
                ),
                mode="markers" if m != "SDEdit" else "lines+markers",
                name=m,
                text=text,
                marker=dict(color=color, size=7),
                line=dict(color=color, dash="dash"),
            )
        )
    for label, ref, sym in (
        ("corrupted input", ref_input, "x"),
        ("clean digits", ref_clean, "star"),
    ):
        fig.add_trace(
            go.Scatter(
                x=[ref[x_key]],
                y=[ref[y_key]],
                mode="markers",
                name=label,
                marker=dict(color=style.GRAY, size=11, symbol=sym),
            )
        )
    fig.update_layout(style.figure_layout(f"{kind}: fidelity vs realism", 400))
    fig.update_xaxes(title_text="RMS distance to the corrupted input")
    return fig.update_yaxes(title_text="Frechet distance (classifier features)", type="log")


def before_after(clean: Tensor, stack: Tensor, kind: str, tile_px: int = 40) -> go.Figure:
    """Rows: clean, corrupted (clamped for display), CODE, SDEdit; stack (3, k, 64)."""
    k = stack.shape[1]
    imgs = torch.cat([clean[:k], *stack]).reshape(-1, 1, 8, 8).clamp(-1, 1)
    titles = ["clean"] + [""] * (k - 1) + ["corrupted"] + [""] * (k - 1) + ["CODE"] + [""] * (k - 1)
    titles += ["SDEdit"] + [""] * (k - 1)
    return image_grid_figure(
        imgs, nrow=k, titles=titles, tile_px=tile_px, title=f"{kind}: before / after"
    )


def clip_rate_figure(
    levels: Sequence[float], noised: Sequence[float], inverted: Sequence[float], bound: float
) -> go.Figure:
    """Clip rate of clean digits per level: forward-noised, ODE-inverted, and the bound."""
    fig = go.Figure(
        [
            go.Scatter(
                x=list(levels), y=plain_floats(noised), name="forward-noised", mode="lines+markers"
            ),
            go.Scatter(
                x=list(levels),
                y=plain_floats(inverted),
                name="ODE-inverted (model)",
                mode="lines+markers",
            ),
            go.Scatter(
                x=[levels[0], levels[-1]],
                y=[bound, bound],
                name="1 - (2 Phi(eta) - 1)",
                mode="lines",
                line=dict(color=style.RED, dash="dot"),
            ),
        ]
    )
    fig.update_layout(style.figure_layout("Clip rate of clean digits", 340))
    fig.update_xaxes(title_text="level t_L")
    return fig.update_yaxes(title_text="share of pixels outside the bound")
