"""Figures that compare samplers: quality against NFE per solver, measured orders, an error
gain against time. Builders take plain numbers (lists, dicts) so chapters and widgets share
them; curves are drawn log-log unless said otherwise.

Time convention: the caller's (the times a curve is drawn against are passed in).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
import torch

from pflow_explore.viz.curves import curve_trace, curves_figure
from pflow_explore.viz.quality import quality_vs_steps_figure
from pflow_explore.viz.style import GRAY

WIDE = 720  # these charts carry up to nine legends: wider than the chapters' default


def _curves(nfe: Sequence[int], values: Mapping[str, Sequence[float]]) -> dict:
    """A curve shorter than ``nfe`` covers its first NFE."""
    return {
        k: (torch.tensor(list(nfe)[: len(v)]), torch.tensor(list(v)), [f"{x:.3g}" for x in v])
        for k, v in values.items()
    }


def quality_vs_nfe_figure(
    nfe: Sequence[int],
    values: Mapping[str, Sequence[float]],
    colors: Mapping[str, str],
    title: str,
    y_title: str,
    floor: float = math.nan,
    floor_text: str = "",
    target: float = math.nan,
    target_text: str = "",
    dotted: Sequence[str] = (),
) -> go.Figure:
    """values: solver -> quality (lower is better) at the first NFE of ``nfe``, log-log;
    ``floor``: a dotted line (the measurement's own noise), ``target``: a dashed one (a level
    to reach); curves named in ``dotted`` are drawn dotted."""
    fig = quality_vs_steps_figure(
        _curves(nfe, values), {}, colors, floor, floor_text, title,
        x_title="NFE", y_title=y_title, width=WIDE,
    )  # fmt: skip
    for trace in fig.data:
        if trace.name in dotted:
            trace.line.dash = "dot"
    if math.isfinite(target):
        fig.add_hline(y=target, line_dash="dash", line_color=GRAY, annotation_text=target_text)
    return fig


def orders_figure(
    nfe: Sequence[int],
    errors: Mapping[str, Sequence[float]],
    orders: Mapping[str, float],
    colors: Mapping[str, str],
    title: str = "ODE solvers: error vs NFE",
) -> go.Figure:
    """Pathwise errors against NFE, log-log, each legend entry with its fitted slope."""
    named = {f"{k} (slope {orders[k]:.2f})": v for k, v in errors.items()}
    cols = {f"{k} (slope {orders[k]:.2f})": colors[k] for k in errors}
    return quality_vs_nfe_figure(nfe, named, cols, title, "max |x_N - exact|")


def error_gain_figure(
    times: Sequence[float],
    errors: Mapping[str, Sequence[float]],
    gain: Sequence[float],
    colors: Mapping[str, str],
    title: str,
    y_title: str = "RMS error per pixel / gain",
) -> go.Figure:
    """Error curves against t (log-log) and, dotted, the gain that multiplies a network's
    noise error into a data error (sigmabar_t / alpha_t)."""
    traces = [
        curve_trace(list(times), list(v), k, line=dict(color=colors[k])) for k, v in errors.items()
    ]
    gain_line = dict(dash="dot", color=GRAY)
    traces.append(curve_trace(list(times), list(gain), "gain sigmabar_t / alpha_t", line=gain_line))
    return curves_figure(
        traces, title, x_title="t", y_title=y_title, log_x=True, log_y=True, width=WIDE
    )


def psnr_vs_nfe_figure(
    values: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    colors: Mapping[str, str],
    title: str,
    baseline: float = math.nan,
    baseline_text: str = "degraded input",
) -> go.Figure:
    """PSNR (higher is better) against NFE (log x): values: solver -> (NFE list, PSNR list);
    and a baseline level (dotted)."""
    traces = [
        curve_trace(list(n), list(v), k, line=dict(color=colors[k])) for k, (n, v) in values.items()
    ]
    fig = curves_figure(traces, title, x_title="NFE", y_title="PSNR (dB)", log_x=True, width=WIDE)
    if math.isfinite(baseline):
        fig.add_hline(y=baseline, line_dash="dot", annotation_text=baseline_text)
    return fig
