"""Figures of the Gaussian-theory probes of a trained denoiser (``gaussian_probes`` results,
chapter 01): when each eigen-feature is fixed (crossing noise level against sqrt(lambda_k),
and the share curves f_k(sigma)), teleportation (Frechet distance against the skipped share
of steps), perturbation gains against the kick's noise level, and the rotation residual of
trajectories. Results in, ``go.Figure`` out.

Time convention: noise level (sigma; sigma = 0 is the data).
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from pflow_explore.gaussian_probes import Emergence, Perturbation, Teleportation, TrajectoryPair
from pflow_explore.viz.curves import curve_trace, curves_figure
from pflow_explore.viz.style import GRAY

DASH, DOT = dict(dash="dash"), dict(dash="dot", color=GRAY)


def feature_emergence_figure(e: Emergence) -> go.Figure:
    """Crossing sigma of each feature against sqrt(lambda_k), Gaussian and trained model."""
    ends = [float(e.sqrt_lambda.min()) / 2, float(e.sqrt_lambda.max()) * 2]
    text = [f"k = {k}" for k in e.features.tolist()]
    traces = [
        curve_trace(ends, ends, "sigma = sqrt(lambda)", mode="lines", line=DOT),
        curve_trace(e.sqrt_lambda, e.crossing_gaussian, "Gaussian", mode="markers", text=text),
        curve_trace(e.sqrt_lambda, e.crossing_learned, "trained model", mode="markers", text=text),
    ]
    title = "Outline first: feature k appears near sigma ~ sqrt(lambda_k)"
    axes = dict(x_title="sqrt(lambda_k)", y_title="sigma where f_k = 1/sqrt(2)")
    return curves_figure(traces, title, **axes, log_x=True, log_y=True)


def feature_shares_figure(e: Emergence, features: tuple[int, ...] = (0, 3, 7)) -> go.Figure:
    """f_k(sigma) along the paths: trained (solid) and Gaussian (dashed), a few features."""
    traces = []
    for k in [k for k in features if k < len(e.features)]:
        traces.append(
            curve_trace(e.sigmas, e.share_learned[:, k], f"k = {k} trained", mode="lines")
        )
        gauss = f"k = {k} Gaussian"
        traces.append(curve_trace(e.sigmas, e.share_gaussian[:, k], gauss, mode="lines", line=DASH))
    title = "Share of each feature fixed in the x0-estimate"
    axes = dict(x_title="sigma (sampling runs right)", y_title="share f_k of the final value")
    fig = curves_figure(traces, title, **axes, log_x=True)
    fig.add_hline(y=1 / math.sqrt(2), line_dash="dot")
    fig.update_xaxes(autorange="reversed")
    return fig


def teleportation_figure(t: Teleportation) -> go.Figure:
    """Frechet distance against the fraction of skipped steps."""
    text = [f"NFE {n}" for n in t.nfe.tolist()]
    mode = "lines+markers+text"
    trace = curve_trace(
        100 * t.fractions, t.fd, "FD", mode=mode, text=text, textposition="top center"
    )
    title = "Teleportation: skip the first X% of steps with the closed form"
    axes = dict(x_title="skipped steps X (%)", y_title="digits Frechet distance")
    fig = curves_figure([trace], title, **axes)
    fig.add_hline(y=1.1 * float(t.fd[0]), line_dash="dot", annotation_text="FD(0) + 10%")
    if math.isfinite(t.fd_floor):
        fig.add_hline(y=t.fd_floor, line_dash="dash", annotation_text="train vs test")
    return fig


def perturbation_figure(p: Perturbation) -> go.Figure:
    """Measured gain |delta x0| / delta against sigma_t, with the predicted gain."""
    traces, q = [], len(p.features)
    for j in sorted({0, q // 2, q - 1}):  # three of the kicked features: a readable plot
        k = int(p.features[j])
        traces.append(curve_trace(p.sigmas_t, p.gain[j], f"u_{k} measured", mode="markers"))
        predicted = f"u_{k} predicted sqrt(l/(l+s^2))"
        traces.append(curve_trace(p.sigmas_t, p.predicted[j], predicted, mode="lines", line=DASH))
    title = "A kick at sigma_t reaches the image scaled by the gain"
    axes = dict(x_title="sigma_t of the kick", y_title="gain |change of x0| / kick")
    return curves_figure(traces, title, **axes, log_x=True, log_y=True)


def rotation_figure(pr: TrajectoryPair) -> go.Figure:
    """Rotation residual (mean over paths) along the analytic and learned trajectories."""
    inner = pr.sigmas[1:-1]
    traces = [
        curve_trace(inner, pr.residual_analytic.mean(1)[1:-1], "Gaussian"),
        curve_trace(inner, pr.residual_learned.mean(1)[1:-1], "trained"),
    ]
    y = "share of x(sigma) - mu outside span{x_T, x_0}"
    title = "Trajectories are nearly 2D rotations"
    fig = curves_figure(traces, title, x_title="sigma", y_title=y, log_x=True)
    fig.update_xaxes(autorange="reversed")
    return fig
