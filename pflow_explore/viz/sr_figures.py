"""Figures of super-resolution experiments (chapter 06): an error-to-the-exact-map curve
against training steps with reference levels, a 2D spread of samples, and method
comparisons (fidelity against sharpness; distribution match against latency). Builders take
plain numbers (lists, dicts) so chapters and widgets share them.

Time convention: none (training steps and latencies only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from torch import Tensor

from pflow_explore.viz.points import samples_figure
from pflow_explore.viz.style import BLUE, GRAY, ORANGE, RED, figure_layout, marker_style


def error_curves_figure(
    steps: Sequence[int],
    curves: Mapping[str, Sequence[float]],
    floors: Mapping[str, float],
    references: Mapping[str, float],
    title: str,
) -> go.Figure:
    """Error against training step, log-log, one line per curve; ``floors`` (curve label ->
    the level that curve can reach) dotted in the curve's colour; ``references`` dashed grey."""
    fig = go.Figure()
    for (label, errs), color in zip(curves.items(), (RED, BLUE, ORANGE, GRAY), strict=False):
        fig.add_trace(go.Scatter(x=list(steps), y=list(errs), name=label, line=dict(color=color)))
        if label in floors:
            fig.add_hline(
                y=floors[label],
                line=dict(color=color, dash="dot"),
                annotation_text=f"optimum, {label}",
            )
    for text, value in references.items():
        fig.add_hline(y=value, line=dict(color=GRAY, dash="dash"), annotation_text=text)
    fig.update_layout(figure_layout(title, 380))
    fig.update_xaxes(type="log", title_text="training step")
    return fig.update_yaxes(type="log", title_text="RMS error")


def spread_figure(samples: Mapping[str, Tensor], title: str, star: str = "") -> go.Figure:
    """Coordinates 0 and 1 of each sample set (n, >= 2), equal axes; the set named ``star``
    drawn as large stars (a single point such as a posterior mean)."""
    traces, colors = [], (GRAY, RED, BLUE, ORANGE, "#000")
    for (label, x), color in zip(samples.items(), colors, strict=False):
        size, symbol = (14, "star") if label == star else (4, "circle")
        style = marker_style("#000" if label == star else color, size, symbol=symbol)
        traces.append(go.Scatter(x=x[:, 0].tolist(), y=x[:, 1].tolist(), name=label, **style))
    return samples_figure(traces, title, 380)


def methods_scatter_figure(
    x: Mapping[str, float],
    y: Mapping[str, float],
    colors: Mapping[str, str],
    title: str,
    x_title: str,
    y_title: str,
    x_se: Mapping[str, float] | None = None,
    y_se: Mapping[str, float] | None = None,
    line: Sequence[str] = (),
    log_x: bool = False,
) -> go.Figure:
    """One marker per method at (x, y) with +- 2 SE bars; the methods in ``line`` joined
    (a family such as one sampler at several NFE) in orange."""
    fig = go.Figure()
    bar = lambda se, k: dict(array=[2 * se[k]]) if se else None  # noqa: E731
    if line:
        fig.add_trace(
            go.Scatter(x=[x[k] for k in line], y=[y[k] for k in line], mode="lines+markers+text",
                       text=list(line), textposition="top center", name="", showlegend=False,
                       line=dict(color=ORANGE))
        )  # fmt: skip
    for k in x:
        if k in line:
            continue
        fig.add_trace(
            go.Scatter(x=[x[k]], y=[y[k]], name=k, mode="markers", error_x=bar(x_se, k),
                       error_y=bar(y_se, k), marker=dict(color=colors.get(k, ORANGE), size=10))
        )  # fmt: skip
    fig.update_layout(figure_layout(title, 400))
    fig.update_xaxes(title_text=x_title, type="log" if log_x else None)
    return fig.update_yaxes(title_text=y_title)
