"""Functions on the plane: vector fields as arrows, densities as heatmaps.

Grid convention, shared by both: ``xs = linspace(*xlim, n)``, ``ys = linspace(*ylim, n)``
and grid point ``j n + i`` is ``(xs[i], ys[j])``, so values reshaped to (n, n) are indexed
``[j, i]`` = row y, column x, which is how ``go.Heatmap`` reads ``z``.

Time convention: the caller's (a field is drawn at the time it is given).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from pflow_explore.viz.arrays import as_numpy, check_shape
from pflow_explore.viz.points import plane_layout

ARROW_COLOR = "rgba(40, 40, 40, 0.8)"


def _check_limits(lim: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in lim)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {lim!r}") from err
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with low < high, got {lim!r}")
    return lo, hi


def plane_grid(
    xlim: tuple[float, float], ylim: tuple[float, float], n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xs (n,), ys (n,) and the grid points (n*n, 2), point ``j n + i = (xs[i], ys[j])``."""
    if int(n) != n or n < 2:
        raise ValueError(f"n (grid points per axis) must be an integer >= 2, got {n!r}")
    n = int(n)
    xs = np.linspace(*_check_limits(xlim, "xlim"), n)
    ys = np.linspace(*_check_limits(ylim, "ylim"), n)
    gx, gy = np.meshgrid(xs, ys)  # (n, n) each, indexed [j, i]
    return xs, ys, np.stack([gx.ravel(), gy.ravel()], axis=1)


def _evaluate(fn: Callable[..., Any], points: np.ndarray, *args: Any) -> np.ndarray:
    """``fn(points, *args)`` on a torch tensor without autograd, as a numpy array."""
    x = torch.as_tensor(points, dtype=torch.get_default_dtype())
    with torch.no_grad():
        return as_numpy(fn(x, *args), "the function's output")


def quiver_trace(
    points: Any,
    vectors: Any,
    scale: float = 1.0,
    head: float = 0.3,
    head_angle: float = 20.0,
    color: str = ARROW_COLOR,
    name: str = "field",
) -> go.Scatter:
    """Arrows from ``points`` (N, 2) to ``points + scale * vectors`` (N, 2), one line trace.

    Arrow k is 7 entries: tail, tip, break, barb, tip, barb, break; a barb is the tip minus
    ``head`` times the shaft rotated by +-``head_angle`` degrees, so the heads scale with
    the arrows.
    """
    p = as_numpy(points, "points")
    v = as_numpy(vectors, "vectors")
    check_shape(p, "points", (None, 2), "(N, 2)")
    check_shape(v, "vectors", (p.shape[0], 2), f"(N, 2) with N = {p.shape[0]} like points")
    shaft = float(scale) * v
    tip = p + shaft
    a = math.radians(head_angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    barb_left = tip - head * shaft @ rot.T
    barb_right = tip - head * shaft @ rot
    gap = np.full_like(p, np.nan)
    arrows = np.stack([p, tip, gap, barb_left, tip, barb_right, gap], axis=1).reshape(-1, 2)
    return go.Scatter(
        x=arrows[:, 0],
        y=arrows[:, 1],
        mode="lines",
        name=name,
        line=dict(color=color, width=1.2),
        hoverinfo="skip",
    )


def arrow_scale(vectors: Any, spacing: float) -> float:
    """The scale that makes the longest of ``vectors`` (N, 2) 0.9 ``spacing`` long.

    The longest, not a typical length, so arrows never run into their neighbours; a field
    with one huge arrow (a score near a sharp mode) therefore looks tiny elsewhere: pass an
    explicit ``scale`` to :func:`vector_field_figure` then.
    """
    norms = np.linalg.norm(as_numpy(vectors, "vectors"), axis=-1)
    longest = float(np.nanmax(norms)) if norms.size else 0.0
    return 0.9 * spacing / longest if longest > 0 and math.isfinite(longest) else 1.0


def quiver_figure(
    points: Any, vectors: Any, scale: float = 1.0, title: str | None = None
) -> go.Figure:
    """Arrows ``points`` (N, 2) -> ``points + scale * vectors`` on the equal-aspect plane."""
    return go.Figure(data=[quiver_trace(points, vectors, scale)], layout=plane_layout(title))


def vector_field_figure(
    field: Callable[..., Any],
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    n: int = 20,
    t: Any = None,
    scale: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """The field v(x) (or v(x, t)) drawn as arrows at an n x n grid over xlim x ylim.

    ``field`` receives a tensor x (n*n, 2) (default dtype) and returns v (n*n, 2); when ``t``
    is given it is called as ``field(x, t)`` with ``t`` passed through unchanged.
    ``scale=None`` picks :func:`arrow_scale` for the grid spacing.
    """
    xs, ys, grid = plane_grid(xlim, ylim, n)
    v = _evaluate(field, grid) if t is None else _evaluate(field, grid, t)
    check_shape(v, "field(x)", (grid.shape[0], 2), f"(n*n, 2) = ({grid.shape[0]}, 2)")
    if scale is None:
        scale = arrow_scale(v, min(xs[1] - xs[0], ys[1] - ys[0]))
    return go.Figure(
        data=[quiver_trace(grid, v, scale)], layout=plane_layout(title, tuple(xlim), tuple(ylim))
    )


def density_heatmap_trace(
    values: Any,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    colorscale: str = "Viridis",
    opacity: float = 1.0,
    showscale: bool = True,
    name: str = "density",
) -> go.Heatmap:
    """A heatmap of ``values`` (n_y, n_x) on ``linspace`` grids over ``xlim`` and ``ylim``."""
    z = as_numpy(values, "values")
    if z.ndim != 2 or min(z.shape) < 2:
        raise ValueError(f"values must have shape (n_y, n_x), both >= 2, got {tuple(z.shape)}")
    xs = np.linspace(*_check_limits(xlim, "xlim"), z.shape[1])
    ys = np.linspace(*_check_limits(ylim, "ylim"), z.shape[0])
    return go.Heatmap(
        x=xs,
        y=ys,
        z=z,
        colorscale=colorscale,
        opacity=opacity,
        showscale=showscale,
        name=name,
        hovertemplate="(%{x:.2f}, %{y:.2f}): %{z:.3g}<extra></extra>",
    )


def density_on_grid(
    log_prob: Callable[[torch.Tensor], Any] | Any,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    n: int = 100,
    log_scale: bool = False,
) -> np.ndarray:
    """p(x) = exp(log p(x)) (or log p(x) if ``log_scale``) on the n x n grid, shape (n, n).

    ``log_prob`` is a function x (N, 2) -> log p(x) (N,), or its values already on the grid,
    (n_y, n_x) indexed [j, i] = log p(xs[i], ys[j]); then ``n`` is ignored.
    """
    if callable(log_prob):
        _, _, grid = plane_grid(xlim, ylim, n)
        lp = _evaluate(log_prob, grid)
        if lp.size != grid.shape[0]:
            raise ValueError(
                f"log_prob(x) must return (N,) for x (N, 2), got {tuple(lp.shape)} "
                f"for N = {grid.shape[0]}"
            )
        lp = lp.reshape(int(n), int(n))
    else:
        lp = as_numpy(log_prob, "log_prob")
        if lp.ndim != 2:
            raise ValueError(f"log_prob values must be a grid (n_y, n_x), got {tuple(lp.shape)}")
    return lp if log_scale else np.exp(lp)


def density_heatmap_figure(
    log_prob: Callable[[torch.Tensor], Any] | Any,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    n: int = 100,
    log_scale: bool = False,
    title: str | None = None,
    colorscale: str = "Viridis",
) -> go.Figure:
    """Heatmap of p(x) = exp(log p(x)) over xlim x ylim (see :func:`density_on_grid`)."""
    z = density_on_grid(log_prob, xlim, ylim, n, log_scale)
    trace = density_heatmap_trace(z, xlim, ylim, colorscale, name="log p" if log_scale else "p")
    layout = plane_layout(title, tuple(xlim), tuple(ylim))
    return go.Figure(data=[trace], layout=layout)
