"""Figures of probability currents and entropy production (docs/papers.md §12): a current
rho v as arrows over its density, particles in a box coloured by a per-particle value, and a
density on a square grid of regions; and the chapter's charts built on them (learned vs
exact EPR across a parameter, per-particle EPR along a ring, MIPS phases, EPR vs packing
fraction). Data in (tensors, arrays, ``mips`` results), ``go.Figure`` out; a NaN never
reaches plotly (None, a gap, where plotly takes one; an error where it does not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from pflow_explore.datasets.particles import wrap
from pflow_explore.epr import PlaneCurrents
from pflow_explore.mips import PHASE_NAMES, PhaseEPR, PhiSweep
from pflow_explore.viz.arrays import as_numpy, check_shape, plain_floats
from pflow_explore.viz.curves import curve_trace, curves_figure
from pflow_explore.viz.fields import quiver_trace
from pflow_explore.viz.points import plane_layout
from pflow_explore.viz.style import curves_layout


def current_field_figure(
    cx: Any,
    cy: Any,
    rho: Any,
    currents: Mapping[str, tuple[Any, str]],
    title: str | None = None,
    x_title: str = "x",
    y_title: str = "y",
    scale: float | None = None,
    height: int = 420,
) -> go.Figure:
    """A density rho (ny, nx) as a heatmap on cell centres cx (nx,), cy (ny,), under the
    currents J (ny, nx, 2) drawn as arrows from the centres: ``currents`` = {name: (J, colour)}.

    ``scale=None``: the longest arrow of the FIRST current is 0.9 of the smaller grid
    spacing, and every current is drawn on that scale, so lengths compare across currents.
    """
    xs, ys = as_numpy(cx, "cx"), as_numpy(cy, "cy")
    gx, gy = np.meshgrid(xs, ys)  # [row y, column x], like rho and J
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    fields = {k: as_numpy(J, f"current {k!r}").reshape(-1, 2) for k, (J, _) in currents.items()}
    for name, J in fields.items():
        check_shape(J, f"current {name!r}", (points.shape[0], 2), "(ny, nx, 2) on the grid")
    if scale is None:
        spacing = float(min(xs[1] - xs[0], ys[1] - ys[0]))
        first = next(iter(fields.values()))
        scale = 0.9 * spacing / max(float(np.linalg.norm(first, axis=-1).max()), 1e-12)
    heat = go.Heatmap(
        x=plain_floats(xs),
        y=plain_floats(ys),
        z=as_numpy(rho, "rho").tolist(),
        colorscale="Blues",
        opacity=0.6,
        showscale=False,
    )
    arrows = [
        quiver_trace(points, fields[name], scale, color=color, name=name)
        for name, (_, color) in currents.items()
    ]
    layout = curves_layout(title, x_title, y_title, height=height)
    return go.Figure([heat, *arrows], layout=layout).update_layout(showlegend=True)


def particles_figure(
    x: Any,
    values: Any,
    symbols: Sequence[str] | None = None,
    text: Sequence[str] | None = None,
    title: str | None = None,
    color_label: str = "value",
    cmax: float | None = None,
    height: int = 520,
) -> go.Figure:
    """Particles at x (N, 2) on the equal-aspect plane, coloured by finite ``values`` (N,)
    from 0 to ``cmax`` (default their maximum), with one marker symbol and hover text per
    particle."""
    p, v = as_numpy(x, "x"), as_numpy(values, "values")
    check_shape(p, "x", (None, 2), "(N, 2)")
    check_shape(v, "values", (p.shape[0],), f"(N,) with N = {p.shape[0]}")
    if not np.isfinite(v).all():  # plotly takes no gap (None) in a colour array
        raise ValueError(
            f"values must be finite, got NaN or inf at {np.flatnonzero(~np.isfinite(v))}"
        )
    marker = dict(
        size=7,
        symbol=list(symbols) if symbols is not None else "circle",
        color=plain_floats(v),
        colorscale="Viridis",
        cmin=0.0,
        cmax=float(v.max()) if cmax is None else float(cmax),
        showscale=True,
        colorbar=dict(title=dict(text=color_label)),
    )
    dots = go.Scatter(
        x=plain_floats(p[:, 0]),
        y=plain_floats(p[:, 1]),
        mode="markers",
        text=list(text) if text is not None else None,
        marker=marker,
        hovertemplate="%{text}<br>" + color_label + " %{marker.color:.3g}<extra></extra>",
    )
    return go.Figure(dots, layout=plane_layout(title, height=height))


def region_heatmap_figure(
    edges: Any, density: Any, title: str | None = None, color_label: str = "per area"
) -> go.Figure:
    """A density (bins, bins), indexed [row y, column x], on the square grid of cells with
    ``edges`` (bins + 1,) along both axes, on the equal-aspect plane."""
    e, z = as_numpy(edges, "edges"), as_numpy(density, "density")
    check_shape(z, "density", (e.shape[0] - 1, e.shape[0] - 1), "(bins, bins), bins = edges - 1")
    centres = plain_floats((e[1:] + e[:-1]) / 2)
    heat = go.Heatmap(x=centres, y=centres, z=z.tolist(), colorscale="Magma")
    heat.update(colorbar=dict(title=color_label))
    return go.Figure(heat, layout=plane_layout(title, height=480))


# ---- the charts of chapter 12 -------------------------------------------------------------------
def trap_epr_figure(
    v0s: Any, learned: Any, exact_g: Any, learned_g: Any, A: float, gamma: float, eps: float
) -> go.Figure:
    """Learned vs exact EPR of the trapped AOUP against v0 (m,): the paper's total
    2 gamma v0^2 / (eps (A + gamma)) (d = 2) as a curve, the learned total and both g-parts."""
    grid = torch.linspace(0, float(as_numpy(v0s, "v0s").max()) * 1.05, 60, dtype=torch.float64)
    exact = 2 * gamma * grid**2 / (eps * (A + gamma))
    dots = dict(mode="markers", marker=dict(size=10))
    traces = [
        curve_trace(grid, exact, "exact 2 gamma v0^2 / (eps (A + gamma))", mode="lines"),
        curve_trace(v0s, learned, "learned, total", **dots),
        curve_trace(v0s, exact_g, "exact g-part", mode="lines", line=dict(dash="dash")),
        curve_trace(v0s, learned_g, "learned g-part", **dots, marker_symbol="diamond"),
    ]
    title = "Trapped AOUP: entropy production vs v0"
    return curves_figure(traces, title, x_title="v0", y_title="EPR (d = 2)")


def plane_currents_figure(c: PlaneCurrents, title: str, x_title: str, y_title: str) -> go.Figure:
    """The exact (grey) and learned (red) currents of ``epr.plane_currents`` over rho, on
    the exact current's arrow scale."""
    arrows = {"exact": (c.J_exact, "rgba(120,120,120,0.8)")}
    arrows["learned"] = (c.J_learned, "rgba(200,30,30,0.9)")
    return current_field_figure(c.cx, c.cy, c.rho, arrows, title, x_title, y_title)


def losses_figure(losses: Mapping[str, Sequence[float]], title: str | None = None) -> go.Figure:
    """Training loss against step, one line per named network."""
    traces = [curve_trace(range(len(v)), v, k, mode="lines") for k, v in losses.items()]
    return curves_figure(traces, title, x_title="step", y_title="loss")


def ring_epr_figure(sizes: Sequence[int], per_particle: Sequence[Any], exact: Any) -> go.Figure:
    """Learned per-particle EPR (N,) along the ring at each N of ``sizes``, with the exact
    value (one per N) as a dashed level."""
    traces = []
    for j, n in enumerate(sizes):
        dots = dict(mode="markers", marker=dict(size=4))
        traces.append(
            curve_trace(torch.arange(n) / n, per_particle[j], f"learned, N = {n}", **dots)
        )
        flat = [float(exact[j])] * 2
        traces.append(curve_trace([0, 1], flat, f"exact, N = {n}", mode="lines", line_dash="dash"))
    title = "Spring ring: per-particle EPR (trained at the first N)"
    x_title = "position along the ring i / N"
    return curves_figure(traces, title, x_title=x_title, y_title="EPR per particle")


def mips_snapshot_figure(m: PhaseEPR, index: int = 0) -> go.Figure:
    """One MIPS configuration: particles coloured by local EPR, shaped by phase (open
    circle: gas, circle: interface, square: bulk)."""
    x, labels = wrap(m.x[index], m.box), m.labels[index].tolist()
    symbols = [("circle-open", "circle", "square")[p] for p in labels]
    text = [PHASE_NAMES[p] for p in labels]
    title = f"MIPS (N = {x.shape[0]}): local EPR; open circle gas, dot interface, square bulk"
    cmax = float(m.local.quantile(0.98))
    return particles_figure(x, m.local[index], symbols, text, title, "local EPR", cmax)


def mips_region_figure(m: PhaseEPR) -> go.Figure:
    """EPR density per region (a coarse grid over the box), averaged over configurations."""
    return region_heatmap_figure(
        m.region_edges, m.region_density, "MIPS: EPR per region", "EPR / area"
    )


def mips_phase_figure(m: PhaseEPR) -> go.Figure:
    """Mean local EPR in gas, interface and bulk, both estimators (an empty phase: no bar)."""
    names = list(PHASE_NAMES)
    bars = [
        go.Bar(x=names, y=plain_floats(m.phase_epr), name="gamma |g + s_g|^2"),
        go.Bar(x=names, y=plain_floats(m.phase_epr_div), name="-gamma div_g s_g - gamma d"),
    ]
    title = f"MIPS: local EPR by phase (interface / bulk = {m.ratio:.2f})"
    return go.Figure(bars, layout=curves_layout(title, "phase", "mean local EPR"))


def phase_epr_figures(m: PhaseEPR) -> dict[str, go.Figure]:
    """{"snapshot", "regions", "phases"}: :func:`mips_snapshot_figure`,
    :func:`mips_region_figure` and :func:`mips_phase_figure` of ``m``."""
    return {
        "snapshot": mips_snapshot_figure(m),
        "regions": mips_region_figure(m),
        "phases": mips_phase_figure(m),
    }


def phi_sweep_figure(w: PhiSweep) -> go.Figure:
    """EPR per particle vs packing fraction (one network trained at ``w.trained_phi``), with
    the share of dense particles on a second axis."""
    traces = [
        curve_trace(w.phis, w.epr, "EPR per particle"),
        curve_trace(w.phis, w.dense_share, "share of dense particles", yaxis="y2"),
    ]
    title = f"EPR vs packing fraction (trained at phi = {w.trained_phi})"
    fig = curves_figure(traces, title, x_title="packing fraction phi", y_title="g-part EPR")
    dense = dict(overlaying="y", side="right", title="dense share", range=[0, 1])
    return fig.update_layout(yaxis2=dense)
