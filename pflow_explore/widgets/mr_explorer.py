"""Chapter 05's explorers: pick a mean-reverting sampler and watch what it costs and gives.

:class:`SolverExplorer` samples a 2D mixture with its exact denoiser: the solver (Euler-
Maruyama, Euler on the PF-ODE, MRS on the ODE or the SDE), the prediction it integrates
(noise or data), its order and its NFE; left, the samples against the data; right, W2 to
the data against NFE for the chosen solver, computed live over a grid of NFE (and kept),
beside fixed reference curves; a move draws at most 400 markers and 4,000 line points
(evenly spaced samples and data, fewer whole paths), W2 uses every sample.
:class:`RestorationStepper` steps through one restoration:
degraded input, the state x_t and the network's x0^ at step i, the truth, for a task, a
network and a solver.

Time convention: diffusion, t in [0, T] as in :mod:`pflow_explore.mean_reverting`; a
sampler runs from T (mu plus noise) down to a small t_end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from pflow_explore import mean_reverting as mr
from pflow_explore.experiment import stored_numbers
from pflow_explore.metrics import exact_w2
from pflow_explore.scale import single_threaded
from pflow_explore.viz.arrays import plain_floats, polylines
from pflow_explore.viz.images import image_grid
from pflow_explore.viz.style import BLUE, GRAY, RED, TEMPLATE, line_style, marker_style
from pflow_explore.widgets.controls import kept_on_error, put_back, send_values, set_quietly
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label, show_rejected, shown_errors
from pflow_explore.widgets.redraw_budget import (
    MAX_DRAWN_LINE_POINTS,
    MAX_DRAWN_MARKERS,
    checked_cap,
    drawing_note,
    evenly_spaced,
    marker_shares,
)
from pflow_explore.widgets.stepping import StepControls

# the explorer's solver families -> (method for noise prediction, for data prediction, top order)
FAMILIES = {
    "MRS ODE": ("mrs_ode_noise", "mrs_ode_data", 3),
    "MRS SDE": (None, "mrs_sde_data", 2),
    "Euler (PF-ODE)": ("euler_ode", "euler_ode", 1),
    "Euler-Maruyama": ("euler_maruyama", "euler_maruyama", 1),
}
MAX_NFE = 500
STORE_VERSION = 1  # of SolverExplorer's stored curve: bump when a sampler changes


def checked_nfe(nfe: Any) -> int:
    """nfe as an int in [1, MAX_NFE]; ValueError otherwise."""
    if isinstance(nfe, bool) or not isinstance(nfe, (int, float, np.integer)) or int(nfe) != nfe:
        raise ValueError(f"NFE must be a whole number between 1 and {MAX_NFE}, got {nfe!r}")
    if not 1 <= nfe <= MAX_NFE:
        raise ValueError(f"NFE must be a whole number between 1 and {MAX_NFE}, got {nfe!r}")
    return int(nfe)


def method_of(family: str, prediction: str, order: int) -> tuple[str, int]:
    """(mean_reverting method, order) of a family and prediction; ValueError if it has none."""
    if family not in FAMILIES:
        raise ValueError(f"solver must be one of {list(FAMILIES)}, got {family!r}")
    if prediction not in ("noise", "data"):
        raise ValueError(f"prediction must be 'noise' or 'data', got {prediction!r}")
    noise, data, top = FAMILIES[family]
    method = noise if prediction == "noise" else data
    if method is None:
        raise ValueError(f"{family} integrates the data prediction only")
    if isinstance(order, bool) or int(order) != order or not 1 <= order <= top:
        raise ValueError(f"{family} has orders 1 to {top}, got {order!r}")
    return method, int(order)


class SolverExplorer(widgets.VBox):
    """mixture: a :class:`~pflow_explore.mean_reverting.MixtureMR` (its exact denoiser);
    x_start (n, 2) float64, samples of the marginal at the grid's first time; data (m, 2)
    float64, the reference for W2; nfe_grid: the NFE of the live curve; reference: name ->
    (nfe list, W2 list), fixed curves drawn for comparison; floor: W2 between two data sets.
    Controls: NFE slider (over ``nfe_grid``) and box (CSS class ``pflow-input``: any whole
    number 1..500), solver, prediction, order; bad input leaves the picture and says why.

    A move redraws the whole figure in the browser, so it draws at most ``max_markers``
    markers and ``max_line_points`` line points in all (both panels): evenly spaced samples
    and data points sharing what the right panel leaves in proportion, and at most
    max_line_points // (NFE + 2) of the ``n_paths`` paths (whole ones, evenly spaced). W2
    uses all n samples; the readout says what is drawn when it is a subset.

    store: a chapter's cache folder (e.g. "mr_sampler"), where the first solver's curve is
    kept (``experiment.stored_numbers``, keyed by a digest of the samples and the mixture):
    a dashboard opened again draws it without sampling every NFE of the grid (1.5 s on a
    laptop); other solvers' curves are computed when picked."""

    def __init__(
        self,
        mixture: mr.MixtureMR,
        x_start: Tensor,
        data: Tensor,
        t_end: float,
        nfe_grid: Sequence[int] = (3, 5, 10, 20, 50, 100, 200),
        reference: Mapping[str, tuple[Sequence[int], Sequence[float]]] | None = None,
        floor: float = float("nan"),
        n_paths: int = 40,
        max_markers: int = MAX_DRAWN_MARKERS,
        max_line_points: int = MAX_DRAWN_LINE_POINTS,
        store: str | None = None,
    ) -> None:
        self.max_markers = checked_cap(max_markers, "max_markers")
        self.max_line_points = checked_cap(max_line_points, "max_line_points")
        self.mixture, self.x_start, self.data, self.t_end = mixture, x_start, data, t_end
        self.nfe_grid, self.floor, self.n_paths = sorted(int(n) for n in nfe_grid), floor, n_paths
        self._runs: dict[tuple[str, int, int], tuple[Tensor, Tensor, float]] = {}
        # time grids per (nfe, spacing): a logsnr grid inverts lambda(t) numerically, about
        # 0.13 s each, and every order and prediction of a family uses the same grids
        self._grids: dict[tuple[int, str], Tensor] = {}
        self._quiet = False
        self.family, self.prediction, self.order, self.nfe = "MRS ODE", "data", 2, 10
        self._curves: dict[tuple[str, int], list[float]] = {}  # (method, order) -> W2 per NFE
        if store is not None:
            self._stored_curve(store)
        fig = make_subplots(
            1, 2, subplot_titles=("samples", "W2 to the data vs NFE"), horizontal_spacing=0.1
        )
        fig.add_trace(go.Scatter(name="data", hoverinfo="skip", **marker_style(GRAY, 3)), 1, 1)
        fig.add_trace(go.Scatter(name="paths", hoverinfo="skip", **line_style(BLUE, 1)), 1, 1)
        fig.add_trace(go.Scatter(name="samples", hoverinfo="skip", **marker_style(BLUE, 3)), 1, 1)
        # what the right panel draws at every move: its curves (plotly.js marks a curve of
        # fewer than 20 points with markers too), the live curve and the star
        self._fixed_markers, self._fixed_line_points = len(self.nfe_grid) + 1, len(self.nfe_grid)
        for name, (n, w) in (reference or {}).items():
            line = dict(color=GRAY, dash="dot", width=1)
            fig.add_trace(go.Scatter(x=list(n), y=plain_floats(w), name=name, line=line), 1, 2)
            self._fixed_markers += len(n) if len(n) < 20 else 0
            self._fixed_line_points += len(n)
        fig.add_trace(
            go.Scatter(name="this solver", mode="lines+markers", line=dict(color=BLUE)), 1, 2
        )
        fig.add_trace(go.Scatter(name="now", **marker_style(RED, 12, symbol="star")), 1, 2)
        if np.isfinite(floor):
            fig.add_hline(y=floor, line_dash="dot", row=1, col=2, annotation_text="data vs data")
        fig.update_xaxes(range=[-1.6, 1.6], row=1, col=1)
        fig.update_yaxes(range=[-1.6, 1.6], scaleanchor="x", row=1, col=1)
        fig.update_xaxes(type="log", title_text="NFE", row=1, col=2)
        fig.update_yaxes(type="log", title_text="W2", row=1, col=2)
        fig.update_layout(
            template=TEMPLATE, height=480, width=980, legend=dict(orientation="h", y=-0.2)
        )
        self.figure: go.Figure = fig  # plain until the first picture is in it (below)
        self.nfe_slider = widgets.SelectionSlider(
            options=self.nfe_grid, value=10, description="NFE"
        )
        self.nfe_box = widgets.IntText(value=10, description="NFE =", layout={"width": "170px"})
        self.nfe_box.add_class("pflow-input")  # validated: the browser test types -1 here
        self.family_menu = widgets.Dropdown(
            options=list(FAMILIES), value=self.family, description="solver"
        )
        self.prediction_buttons = widgets.ToggleButtons(options=["data", "noise"], value="data")
        self.order_slider = widgets.IntSlider(value=2, min=1, max=3, description="order")
        self.message, self.readout = message_label(), widgets.HTML()
        send_values(self, self.set_nfe, self.nfe_slider, self.nfe_box)
        send_values(
            self, lambda f: self.set_solver(f, self.prediction, self.order), self.family_menu
        )
        send_values(
            self, lambda p: self.set_solver(self.family, p, self.order), self.prediction_buttons
        )
        send_values(
            self, lambda o: self.set_solver(self.family, self.prediction, o), self.order_slider
        )
        self.set_solver(self.family, self.prediction, self.order)
        self.figure = LiveFigure(fig)
        rows = [
            widgets.HBox([self.nfe_slider, self.nfe_box]),
            widgets.HBox([self.family_menu, self.prediction_buttons, self.order_slider]),
        ]
        super().__init__([*rows, self.message, self.figure, self.readout])

    # --- computing ----------------------------------------------------------------------
    def run(self, method: str, order: int, nfe: int) -> tuple[Tensor, Tensor, float]:
        """(end samples (n, 2), paths of the first ``n_paths`` (nfe + 1, k, 2), W2 to data)."""
        key = (method, order, nfe)
        if key not in self._runs:
            sch, mix = self.mixture.schedule, self.mixture
            spacing = "uniform" if method.startswith("euler") else "logsnr"
            if (nfe, spacing) not in self._grids:
                self._grids[(nfe, spacing)] = mr.time_grid(sch, nfe, spacing, self.t_end)
            times = self._grids[(nfe, spacing)]
            with torch.no_grad(), single_threaded():
                sol = mr.sample(
                    method,
                    mix.denoiser,
                    sch,
                    self.x_start,
                    mix.mu,
                    times,
                    order,
                    torch.Generator().manual_seed(0),
                    trajectory=True,
                )
                w2 = exact_w2(sol.x, self.data)
            self._runs[key] = (sol.x, sol.trajectory[:, : self.n_paths], w2)
        return self._runs[key]

    def curve(self) -> list[float]:
        """W2 of the current solver at every NFE of the grid (computed once per solver)."""
        method, order = method_of(self.family, self.prediction, self.order)
        if (method, order) not in self._curves:
            self._curves[method, order] = [self.run(method, order, n)[2] for n in self.nfe_grid]
        return list(self._curves[method, order])

    def _stored_curve(self, chapter: str) -> None:
        """The first solver's curve, from ``chapter``'s store (computed there once)."""
        method, order = method_of(self.family, self.prediction, self.order)
        m = self.mixture.mixture
        inputs = dict(x_start=self.x_start, data=self.data, mu=self.mixture.mu,
                      weights=m.weights, means=m.means, covs=m.covs)  # fmt: skip
        key = dict(schedule=dataclasses.asdict(self.mixture.schedule), t_end=self.t_end,
                   method=method, order=order, nfe=self.nfe_grid)  # fmt: skip
        compute = lambda: {"w2": self.curve()}
        table = stored_numbers(chapter, "solver-explorer", inputs, key, compute, STORE_VERSION)
        self._curves[method, order] = table["w2"]

    # --- controls ------------------------------------------------------------------------
    def set_solver(self, family: Any, prediction: Any, order: Any) -> bool:
        """Pick the solver family, prediction ("noise" / "data") and order; an order above the
        family's top is lowered to it. False and a message on bad input."""
        with shown_errors(self.message) as outcome:
            if family in FAMILIES and isinstance(order, int) and not isinstance(order, bool):
                order = min(max(order, 1), FAMILIES[family][2])
            if family == "MRS SDE":
                prediction = "data"
            method_of(family, prediction, order)
            self.family, self.prediction, self.order = family, prediction, order
            curve = self.curve()
            self._sync_controls()
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "Showing the previous solver")
        with self.figure.batch_update():
            n = len(self.figure.data)
            self.figure.data[n - 2].x, self.figure.data[n - 2].y = (
                self.nfe_grid,
                plain_floats(curve),
            )
        return self.set_nfe(self.nfe)

    def set_nfe(self, nfe: Any) -> bool:
        """Sample with ``nfe`` steps (a whole number 1..500); False and a message otherwise."""
        with shown_errors(self.message) as outcome:
            nfe = checked_nfe(nfe)
            method, order = method_of(self.family, self.prediction, self.order)
            x, paths, w2 = self.run(method, order, nfe)
        if not outcome.ok:
            return put_back(
                self, self.nfe_box, self.nfe, outcome.error, "Showing the previous samples"
            )
        self.nfe = nfe
        self._sync_controls()  # the controls first, then the picture
        data, d, p = self.figure.data, self.data.numpy(), paths.float().numpy()
        # evenly spaced subsets within the caps (the class docstring); W2 used all samples
        left = max(2, self.max_markers - self._fixed_markers)
        drawn_data, drawn_samples = marker_shares([len(d), len(x)], left)
        rows, keep = evenly_spaced(len(d), drawn_data), evenly_spaced(len(x), drawn_samples)
        budget = max(1, (self.max_line_points - self._fixed_line_points) // (len(p) + 1))
        lines = evenly_spaced(p.shape[1], budget)
        s = x[keep].float().numpy()
        note = drawing_note(
            (len(keep), len(x), "samples"),
            (len(rows), len(d), "data points"),
            (len(lines), p.shape[1], "paths"),
        )
        with self.figure.batch_update():
            data[0].x, data[0].y = d[rows, 0], d[rows, 1]
            data[1].x, data[1].y = polylines(p[:, lines])
            data[2].x, data[2].y = s[:, 0], s[:, 1]
            data[-1].x, data[-1].y = [nfe], [w2]
        self._write_readout(w2, note)
        return True

    def _sync_controls(self) -> None:
        noise_ok = FAMILIES[self.family][0] is not None
        self.prediction_buttons.disabled = not noise_ok
        self.order_slider.max = FAMILIES[self.family][2]
        set_quietly(self, self.family_menu, self.family)
        set_quietly(self, self.prediction_buttons, self.prediction)
        set_quietly(self, self.order_slider, self.order)
        if self.nfe in self.nfe_slider.options:
            set_quietly(self, self.nfe_slider, self.nfe)
        set_quietly(self, self.nfe_box, self.nfe)

    def _write_readout(self, w2: float, note: str = "") -> None:
        method, order = method_of(self.family, self.prediction, self.order)
        floor = f" (data vs data: {self.floor:.3f})" if np.isfinite(self.floor) else ""
        self.readout.value = (
            f"<b>{self.family}</b>, {self.prediction} prediction, order {order} "
            f"(<code>{method}</code>), {self.nfe} NFE: W2 to the data <b>{w2:.4f}</b>{floor}"
            + (f" &nbsp;|&nbsp; {note}" if note else "")
        )


class RestorationStepper(StepControls, widgets.VBox):
    """pairs: task -> (x0 (k, d), mu (k, d)) flat images in [-1, 1]; denoisers: network name
    -> make(mu) returning the denoiser x0^(x, t) a sampler calls; solvers: label ->
    (method, order, spacing); image_shape (C, H, W). Rows of the figure: degraded input mu,
    the state x at step i, the network's x0^ at step i, the truth. Controls: task, network,
    solver, NFE (2..50) and the step row (Play, Prev, Next, slider)."""

    step_noun = "step"

    def __init__(
        self,
        pairs: Mapping[str, tuple[Tensor, Tensor]],
        denoisers: Mapping[str, Callable[[Tensor], mr.Denoiser]],
        schedule: mr.MRSchedule,
        solvers: Mapping[str, tuple[str, int, str]],
        image_shape: tuple[int, int, int],
        t_end: float,
        nfe: int = 10,
    ) -> None:
        self.pairs, self.denoisers, self.schedule = pairs, denoisers, schedule
        self.solvers, self.image_shape, self.t_end = solvers, tuple(image_shape), t_end
        self.task, self.net, self.solver = (
            next(iter(pairs)),
            next(iter(denoisers)),
            next(iter(solvers)),
        )
        self.nfe, self._step, self._states, self._x0 = nfe, 0, None, None
        self.message, self.readout = message_label(), widgets.HTML()
        self._compute()
        fig = go.Figure(go.Image(z=self._picture(0), hoverinfo="skip"))
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        h, w = fig.data[0].z.shape[:2]
        size = dict(width=min(980, max(520, 4 * w + 80)), height=4 * h + 60)
        fig.update_layout(template=TEMPLATE, margin=dict(l=10, r=10, t=40, b=10), **size)
        self.figure: go.Figure = fig  # plain until the first step is drawn in it (below)
        row = self.step_row(400, noun="step")
        self.task_menu = widgets.Dropdown(options=list(pairs), value=self.task, description="task")
        self.net_menu = widgets.Dropdown(
            options=list(denoisers), value=self.net, description="network"
        )
        self.solver_menu = widgets.Dropdown(
            options=list(solvers), value=self.solver, description="solver"
        )
        self.nfe_slider = widgets.IntSlider(value=nfe, min=2, max=50, description="NFE")
        for control in (self.task_menu, self.net_menu, self.solver_menu, self.nfe_slider):
            control.observe(self._on_setting, names="value")
        self._show_step(0)  # into the plain figure: what changes before display is lost
        self.figure = LiveFigure(fig)
        settings = widgets.HBox([self.task_menu, self.net_menu, self.solver_menu, self.nfe_slider])
        super().__init__([row, settings, self.message, self.figure, self.readout])

    @property
    def n_steps(self) -> int:
        """The last step index (= NFE)."""
        return len(self._states) - 1

    def _compute(self) -> None:
        x0, mu = self.pairs[self.task]
        method, order, spacing = self.solvers[self.solver]
        times = mr.time_grid(self.schedule, self.nfe, spacing, self.t_end)
        start = self.schedule.prior_sample(mu, len(mu), torch.Generator().manual_seed(0))
        D = self.denoisers[self.net](mu)
        states, x0s = [start], []
        with torch.no_grad(), single_threaded():
            for one in mr.steps(
                method, D, self.schedule, start, mu, times, order, torch.Generator().manual_seed(1)
            ):
                states.append(one.x_next)
                x0s.append(one.x0_hat)
        x0s.append(states[-1])  # after the last step the state is the answer
        self._states, self._x0, self._times = states, x0s, times.tolist()

    def _picture(self, i: int) -> np.ndarray:
        x0, mu = self.pairs[self.task]
        rows = [mu, self._states[i], self._x0[i], x0]
        images = torch.cat(rows).clamp(-1, 1).reshape(-1, *self.image_shape)
        return image_grid(images.numpy(), nrow=len(x0), padding=1)

    def _show_step(self, i: int) -> None:
        with self.figure.batch_update():
            self.figure.data[0].z = self._picture(i)
            self.figure.layout.title = (
                f"{self.net} network, {self.solver}: step {i} / {self.n_steps}"
            )
        t = self._times[min(i, len(self._times) - 1)]
        self.time_label.value = f"t = {t:.3g}"
        self.readout.value = (
            f"{self.task}; rows: degraded input, x_t, x0^, truth; x0^ after "
            f"{min(i + 1, self.n_steps)} network evaluation(s)"
        )

    def set_setting(
        self, task: Any = None, net: Any = None, solver: Any = None, nfe: Any = None
    ) -> bool:
        """Change any of task, network, solver, NFE (2..50) and recompute; False and a
        message on bad input (the previous picture stays)."""
        kept = kept_on_error(self, "task", "net", "solver", "nfe")
        with shown_errors(self.message) as outcome, kept:
            task, net = task or self.task, net or self.net
            solver, nfe = solver or self.solver, self.nfe if nfe is None else nfe
            for value, allowed, name in (
                (task, self.pairs, "task"),
                (net, self.denoisers, "network"),
                (solver, self.solvers, "solver"),
            ):
                if value not in allowed:
                    raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
            if isinstance(nfe, bool) or int(nfe) != nfe or not 2 <= nfe <= 50:
                raise ValueError(f"NFE must be a whole number in [2, 50], got {nfe!r}")
            self.task, self.net, self.solver, self.nfe = task, net, solver, int(nfe)
            self._compute()
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "Showing the previous run")
        self._step = min(self._step, self.n_steps)
        self._fit_step_range()
        self.step_to(self.n_steps)
        return True

    def _on_setting(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        names = {
            self.task_menu: "task",
            self.net_menu: "net",
            self.solver_menu: "solver",
            self.nfe_slider: "nfe",
        }
        self.set_setting(**{names[change["owner"]]: change["new"]})
