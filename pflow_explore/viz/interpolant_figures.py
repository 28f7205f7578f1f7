"""Figures of a stochastic interpolant's measurements (docs/papers.md §02).

Data in (``interpolant_learning.Sweep`` / ``FieldErrors``, ``theory.interpolant_checks``'s
``MonteCarloCheck`` / ``ResidualConvergence`` / ``LikelihoodControl``), ``go.Figure`` out:
samples of the ODE and SDEs from one learned pair, distances to the target against eps,
field errors against t, the exact likelihood control, the grid residuals, the Monte-Carlo
table. Thresholds and pair titles are arguments: the chapter passes its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go
import torch

from pflow_explore.interpolant_learning import FieldErrors, Sweep
from pflow_explore.theory.interpolant_checks import (
    LikelihoodControl,
    MonteCarloCheck,
    ResidualConvergence,
)
from pflow_explore.viz.arrays import plain_floats
from pflow_explore.viz.curves import curve_trace, curves_figure
from pflow_explore.viz.panels import panel_grid
from pflow_explore.viz.points import points_trace
from pflow_explore.viz.style import BLUE, GRAY, GREEN, ORANGE, RED, figure_layout

PALETTE = (BLUE, ORANGE, GREEN, RED)
MC_COLUMNS = ("t", "point", "field", "coord", "exact", "Monte Carlo", "SE", "z")


def eps_label(eps: float) -> str:
    """ "ODE" for eps = 0, else "SDE eps = <eps>"."""
    return "ODE" if eps == 0 else f"SDE eps = {eps:g}"


def samples_figure(sw: Sweep, title: str) -> go.Figure:
    """Target samples (n, 2), then the ODE's and each SDE's samples from the same pair."""
    names = ["target"] + [eps_label(e) for e in sw.eps.tolist()]
    sets = [sw.target] + list(sw.samples)
    lim = [float(sw.target.min()) - 0.5, float(sw.target.max()) + 0.5]
    panels = [
        [[points_trace(x, color=GRAY if i == 0 else BLUE, size=2)] for i, x in enumerate(sets)]
    ]
    axes = dict(range=lim, visible=False)
    return panel_grid(
        panels, names, spacing=(0.02, 0.08), axes=axes, font=12, equal_aspect=False,
        title=title, height=260, width=190 * len(sets),
    )  # fmt: skip


def eps_sweep_figure(
    sweeps: Mapping[str, Sweep], titles: Mapping[str, str], threshold: float
) -> go.Figure:
    """Energy distance and sliced W2 to the target against eps (E,), each pair relative to
    its noise floor; a dotted line at the claim's ``threshold`` (energy panel)."""
    from plotly.subplots import make_subplots

    panel_titles = ("energy distance / floor", "sliced W2 / floor")
    fig = make_subplots(rows=1, cols=2, subplot_titles=panel_titles, horizontal_spacing=0.12)
    for i, (name, sw) in enumerate(sweeps.items()):
        eps = [str(e) if e else "ODE" for e in sw.eps.tolist()]
        for col, ratio in ((1, sw.energy / sw.floor_energy), (2, sw.sliced_w2 / sw.floor_sw2)):
            fig.add_scatter(
                x=eps, y=plain_floats(ratio), mode="lines+markers", name=titles[name],
                line=dict(color=PALETTE[i % 4]), showlegend=col == 1, row=1, col=col,
            )  # fmt: skip
    fig.add_hline(y=threshold, line_dash="dot", annotation_text="claim threshold", row=1, col=1)
    fig.add_hline(y=1.0, line_dash="dash", line_color="gray", row=1, col=2)
    fig.update_yaxes(type="log")
    fig.update_xaxes(title="eps (0: ODE)", type="category")
    title = "One pair (b, s), a family of samplers: distance to the target vs eps"
    return fig.update_layout(**figure_layout(title, 400, keep_view=False, width=900))


def field_error_figure(errors: list[FieldErrors], threshold: float) -> go.Figure:
    """Relative L2 error of the learned b and eta against t (T,), per pair with exact fields."""
    traces = []
    for e in errors:
        traces.append(curve_trace(e.times, e.b, f"b, {e.pair}"))
        traces.append(curve_trace(e.times, e.eta, f"eta, {e.pair}", line=dict(dash="dash")))
    fig = curves_figure(
        traces, "Learned fields against the exact ones", x_title="t",
        y_title="relative L2 error on x ~ rho_t", log_y=True, width=620,
    )  # fmt: skip
    fig.add_hline(y=threshold, line_dash="dot", annotation_text="claim threshold (b)")
    return fig


def likelihood_figure(lc: LikelihoodControl) -> go.Figure:
    """KL(rho1 || rho1_hat) of the SDEs against eps (E,) with the Girsanov bound, and the
    ODE's KL as a dashed line."""
    traces = [
        curve_trace(lc.eps, lc.bound, "bound (1/4 eps) int E|delta|^2", mode="lines"),
        curve_trace(lc.eps, lc.kl_sde, "SDE: exact KL", mode="markers", marker=dict(size=9)),
    ]
    title = f"Likelihood control: drift error delta = -{lc.strength:g} (x - m_t)"
    fig = curves_figure(
        traces, title, x_title="eps", y_title="KL(rho1 || rho1_hat)", log_x=True, log_y=True,
        width=620,
    )  # fmt: skip
    label = f"ODE: KL = {lc.kl_ode:.3g}"
    fig.add_hline(y=lc.kl_ode, line_dash="dash", line_color=RED, annotation_text=label)
    return fig


def strength_figure(lc: LikelihoodControl) -> go.Figure:
    """KL against the perturbation strength k (K,): the ODE's grows like e^{2k}, the SDE's
    stays under a bound that grows like k^2."""
    k = lc.strengths
    traces = [
        curve_trace(k, lc.kl_ode_k, "ODE"),
        curve_trace(k, lc.kl_sde_k, f"SDE eps = {lc.eps_ref:g}"),
        curve_trace(k, lc.bound_k, "its bound", mode="lines", line=dict(dash="dot")),
    ]
    return curves_figure(
        traces, "Where the ODE degrades and the SDE does not", x_title="perturbation strength k",
        y_title="KL(rho1 || rho1_hat)", log_y=True, width=620,
    )  # fmt: skip


def residual_figure(res: ResidualConvergence) -> go.Figure:
    """RMS residual (E, L) of the transport / Fokker-Planck equations against the grid
    spacing h (L,), with a slope-2 guide."""
    names = [
        f"Fokker-Planck, eps = {e:g}" if e else "transport (eps = 0)" for e in res.eps.tolist()
    ]
    traces = [curve_trace(res.h, rms, name) for rms, name in zip(res.rms, names, strict=True)]
    ref = res.rms[:, 0].max() * (res.h / res.h[0]) ** 2
    traces.append(
        curve_trace(res.h, ref, "slope 2", mode="lines", line=dict(dash="dot", color="gray"))
    )
    return curves_figure(
        traces, "The exact density solves the equations: residual -> 0 with the grid",
        x_title="grid spacing h (dt halved alongside)", y_title="RMS residual", log_x=True,
        log_y=True, width=620,
    )  # fmt: skip


def monte_carlo_cells(mc: MonteCarloCheck) -> list[list[str]]:
    """The Monte-Carlo check as text columns (:data:`MC_COLUMNS`), one row per entry."""
    fmt = (".2f", "d", "s", "d", ".4f", ".4f", ".4f", "+.2f")
    cols = (mc.t, mc.point, mc.field, mc.coordinate, mc.exact, mc.mc, mc.se, mc.z)
    values = [c if isinstance(c, list) else c.tolist() for c in cols]
    return [[format(v, f) for v in col] for col, f in zip(values, fmt, strict=True)]


def monte_carlo_table(mc: MonteCarloCheck) -> go.Figure:
    """The Monte-Carlo check as a table: t, point, field, coordinate, exact, MC, SE, z."""
    header = dict(values=list(MC_COLUMNS), align="left")
    cells = dict(values=monte_carlo_cells(mc), align="left")
    title = f"Exact fields vs Monte Carlo ({mc.n_mc} draws per time)"
    layout = figure_layout(title, 420, keep_view=False, width=700)
    return go.Figure(go.Table(header=header, cells=cells), layout=layout)


def monte_carlo_html(mc: MonteCarloCheck, z_bound: float) -> str:
    """The Monte-Carlo check as an HTML table, entries with |z| >= ``z_bound`` in bold red (a
    plotly Table shown as a FigureWidget ahead of other FigureWidgets stopped their updates
    in Voila, so the notebook shows this)."""
    right = "style='text-align:right'"
    head = "".join(f"<th {right}>{h}</th>" for h in MC_COLUMNS)
    rows = []
    for i, row in enumerate(zip(*monte_carlo_cells(mc), strict=True)):
        bold = ";color:#b00020;font-weight:bold" if abs(float(mc.z[i])) >= z_bound else ""
        cells = "".join(f"<td style='text-align:right{bold}'>{c}</td>" for c in row)
        rows.append(f"<tr>{cells}</tr>")
    return (
        "<div style='max-height:320px;overflow-y:auto'><table class='pflow-mc'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def losses_figure(losses: Mapping[str, list[float]], titles: Mapping[str, str]) -> go.Figure:
    """Training loss L_b + L_eta per step, smoothed over 50 steps, one line per pair."""
    traces = []
    for name, values in losses.items():
        loss = torch.tensor(values, dtype=torch.float64)
        k = min(50, len(loss))
        smooth = loss.unfold(0, k, 1).mean(1)
        traces.append(curve_trace(torch.arange(len(smooth)), smooth, titles[name], mode="lines"))
    return curves_figure(
        traces, "Training the pair (b, eta)", x_title="step",
        y_title="L_b + L_eta (per dimension)", width=620,
    )  # fmt: skip


def digits_figure(sw: Sweep, n: int = 8) -> go.Figure:
    """The first n digits (32x32) per eps (rows: ODE, then SDEs), from the same noise."""
    from pflow_explore.viz.images import image_grid_figure

    imgs = sw.samples[:, :n].reshape(-1, 1, 32, 32).clamp(-1, 1)
    labels = ["ODE" if e == 0 else f"eps={e:g}" for e in sw.eps.tolist()]
    titles = [label if i == 0 else "" for label in labels for i in range(n)]
    return image_grid_figure(
        imgs, nrow=n, titles=titles, tile_px=48, title="Digits from noise, per eps"
    )
