"""One pair (b, s), two generative models: step through ODE and SDE trajectories side by side.

Card 02_interpolants: from the same velocity b and score s of a stochastic interpolant,

    ODE  dX = b(X, t) dt,
    SDE  dX = (b(X, t) + eps s(X, t)) dt + sqrt(2 eps) dW,   any eps >= 0,

carry rho0 to rho1 (the SDE keeps the marginal rho_t of x_t for every eps because eps s dt
and the noise cancel in the Fokker-Planck equation: eps div(rho s) = eps lap rho). Both
start from the same x0. The ODE is integrated with Heun, the SDE with Euler-Maruyama on the
same time grid; the SDE noise comes from a generator seeded with ``seed`` on every
resample, so a given eps always shows the same paths. ``b`` and ``s`` are plain callables
``(x (n, 2), t: float) -> (n, 2)`` (x first, as ``solvers.Field``): a learned pair or the exact one.

Time convention: flow (t = 0 is rho0, t = 1 is rho1).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from pflow_explore.metrics import energy_distance, sliced_w2
from pflow_explore.scale import single_threaded
from pflow_explore.solvers import collect, euler_maruyama, noise_steps, odeint
from pflow_explore.viz.arrays import polylines
from pflow_explore.viz.style import BLUE, PURPLE, figure_layout, line_style, margins, marker_style
from pflow_explore.widgets.controls import quietly, send_values, shown
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import (
    describe_error,
    message_label,
    show_rejected,
    shown_errors,
)
from pflow_explore.widgets.stepping import StepControls

PairField = Callable[[Tensor, float], Tensor]
# one update x_next = step(x, b(x, t), s(x, t), eps, dt, xi), xi ~ N(0, I); all (n, 2)
SDEStep = Callable[[Tensor, Tensor, Tensor, float, float, Tensor], Tensor]

TARGET_COLOR = "rgba(150, 150, 150, 0.35)"
FULL_PATH_COLOR = "rgba(90, 90, 90, 0.25)"
TRACED_COLOR = "rgba(214, 39, 40, 0.8)"
ODE_COLOR = BLUE
SDE_COLOR = PURPLE
# Trace names of one panel, bottom to top; the figure holds them for the ODE, then the SDE.
PANEL_TRACES = ("target", "paths", "so far", "particles")
SLOW_NOTE_S = 0.2  # a resample that took longer than this shows a "computing" note next time
METRIC_PROJECTIONS = 128
MAX_STEPS = 5000


def _eps(eps: Any) -> float:
    """eps as a float >= 0, or a ValueError naming it."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0 (0 is the ODE), got {eps!r}")
    return float(eps)


def _n_steps(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Real) or n != int(n):
        raise ValueError(f"n_steps must be an integer in [1, {MAX_STEPS}], got {n!r}")
    if not 1 <= n <= MAX_STEPS:
        raise ValueError(f"n_steps must be an integer in [1, {MAX_STEPS}], got {n!r}")
    return int(n)


def _points(x: Any, name: str) -> Tensor:
    t = torch.as_tensor(x).detach()
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.dim() != 2 or t.shape[1] != 2 or t.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n, 2) with n >= 1, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return t


def pair_drift(b: PairField, s: PairField, eps: float) -> Callable[[Tensor, Tensor], Tensor]:
    """The forward SDE drift f(x, t) = b(x, t) + eps s(x, t) as a ``solvers.Field``.

    x: (n, 2) -> (n, 2) in x's dtype; for eps = 0 only b is evaluated (the ODE).
    """

    def f(x: Tensor, t: Tensor) -> Tensor:
        tf = float(t)
        with torch.no_grad():
            v = torch.as_tensor(b(x, tf)).to(x.dtype)
            if eps > 0:
                v = v + eps * torch.as_tensor(s(x, tf)).to(x.dtype)
        if v.shape != x.shape:
            raise ValueError(f"b(x, t) and s(x, t) must return {tuple(x.shape)}, got {v.shape}")
        return v

    return f


def ode_trajectories(b: PairField, x0: Tensor, times: Tensor, method: str = "heun") -> Tensor:
    """ODE dX = b(X, t) dt from x0 (n, 2) over ``times`` (T+1,): trajectories (T+1, n, 2)."""
    return odeint(pair_drift(b, b, 0.0), x0, times, method, trajectory=True).trajectory


def sde_trajectories(
    b: PairField,
    s: PairField,
    eps: float,
    x0: Tensor,
    times: Tensor,
    seed: int = 0,
    step: SDEStep | None = None,
) -> Tensor:
    """Euler-Maruyama for dX = (b + eps s) dt + sqrt(2 eps) dW: trajectories (T+1, n, 2).

    The noise comes from a CPU generator seeded with ``seed``; eps = 0 gives Euler's ODE.
    ``step(x, b, s, eps, dt, xi) -> x_next`` replaces the package's update (a learner's
    exercise 3 of chapter 02); the same noise xi ~ N(0, I) is drawn for either, so the
    package's ``samplers.sde_step`` gives the same paths as the default.
    """
    gen = torch.Generator().manual_seed(int(seed))
    if step is None:
        g = math.sqrt(2.0 * _eps(eps))
        sol = euler_maruyama(pair_drift(b, s, eps), lambda t: g, x0, times, gen, trajectory=True)
        return sol.trajectory
    field_b, field_s = pair_drift(b, b, 0.0), pair_drift(s, s, 0.0)

    def update(x: Tensor, t: Tensor, dt: Tensor, xi: Tensor) -> Tensor:
        bx = field_b(x, t)
        sx = field_s(x, t) if eps > 0 else torch.zeros_like(x)
        try:
            out = step(x, bx, sx, eps, float(dt), xi)
        except Exception as err:  # the learner's bug, reported on the widget
            raise ValueError(f"your sde_step raised {type(err).__name__}: {err}") from err
        x = torch.as_tensor(out, dtype=x.dtype) if out is not None else None
        if x is None or x.shape != x0.shape:
            got = "None" if x is None else tuple(x.shape)
            raise ValueError(f"sde_step must return the next state {tuple(x0.shape)}, got {got}")
        return x

    # the solvers' step loop with the learner's update: the same noise draws as the default
    return collect(noise_steps(update, x0, times, gen), x0, times, 0, trajectory=True).trajectory


def _finite(traj: Tensor, what: str) -> np.ndarray:
    a = traj.detach().to(torch.float32).cpu().numpy()
    bad = ~np.isfinite(a)
    if bad.any():
        first = int(np.argmax(bad.any(axis=(1, 2))))
        raise ValueError(
            f"the {what} diverged (NaN or infinite values from step {first}): try more steps"
            + (" or a smaller eps" if what == "SDE" else "")
        )
    return a


@dataclass(frozen=True)
class StepperState:
    """What the figure shows: times (T+1,), ode and sde trajectories (T+1, n, 2) float32,
    eps, and the distances of the final samples to the target (None without a target)."""

    times: np.ndarray
    ode: np.ndarray
    sde: np.ndarray
    eps: float
    distances: dict[str, dict[str, float]] | None


class SDEStepper(StepControls, widgets.VBox):
    """ODE vs SDE from the same (b, s): step through whole trajectories, resample with eps.

    Children: the FigureWidget (left the ODE, right the SDE with the current eps: the target
    samples faint, ``n_traj_shown`` full paths faint, the same paths traced up to the current
    step, all particles at the step), then Play / Prev / Next / the step slider (the widget's
    first slider) with the time, the eps slider over ``eps_values`` and the text boxes eps
    and n_steps (CSS class ``pflow-input``), a status line ("computing" while a slow
    resample runs), the readout with the energy distance and sliced W2 of the final samples
    to ``target`` (computed at every resample), and the message line. Bad input (eps < 0,
    n_steps < 1, a diverging solver) shows a message and keeps the last good picture.
    ``sde_step(x, b, s, eps, dt, xi)``: the update the SDE runs (a learner's, chapter 02's
    exercise 3, passed through ``Exercise.use``); default the package's.
    """

    def __init__(
        self,
        b: PairField,
        s: PairField,
        x0: Any,
        target: Any = None,
        eps_values: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0),
        n_steps: int = 50,
        t_range: tuple[float, float] = (0.0, 1.0),
        n_traj_shown: int = 8,
        seed: int = 0,
        eps: float | None = None,
        ode_method: str = "heun",
        interval_ms: int = 120,
        height: int = 440,
        sde_step: SDEStep | None = None,
    ) -> None:
        if not (callable(b) and callable(s)):
            raise ValueError("b and s must be callables (x (n, 2), t) -> (n, 2)")
        if sde_step is not None and not callable(sde_step):
            raise ValueError("sde_step must be a function (x, b, s, eps, dt, xi) -> x_next")
        self._b, self._s, self._sde_step = b, s, sde_step
        self._x0 = _points(x0, "x0")
        self._target = None if target is None else _points(target, "target")
        values = sorted({_eps(float(e)) for e in eps_values})
        if not values:
            raise ValueError("eps_values must hold at least one number >= 0")
        self.eps_values = tuple(values)
        lo, hi = (float(v) for v in t_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(
                f"t_range must be finite times (t0, t1) with t0 < t1 (the forward SDE runs "
                f"from rho0 at t0 to rho1 at t1), got {t_range!r}"
            )
        self.t_range = (lo, hi)
        if int(n_traj_shown) != n_traj_shown or n_traj_shown < 0:
            raise ValueError(f"n_traj_shown must be an integer >= 0, got {n_traj_shown!r}")
        self._shown = np.arange(min(int(n_traj_shown), self._x0.shape[0]))
        self.seed = int(seed)
        self.ode_method = ode_method
        self._n = _n_steps(n_steps)
        eps0 = self.eps_values[len(self.eps_values) // 2] if eps is None else _eps(eps)
        self._step = 0
        self._ode_cache: tuple[int, np.ndarray] | None = None
        self.last_compute_s = 0.0

        self.message = message_label()
        self._state = self._computed(eps0, self._n)  # bad arguments raise here, clearly
        self._step = self.n_steps

        draft = self._empty_figure(height)
        self._draw_paths(draft)
        self._draw_step(draft)
        self.figure = LiveFigure(draft)

        steps_row = self.step_row(interval_ms, value=self.n_steps, slider_width="340px")
        initial = eps0 if eps0 in self.eps_values else self.eps_values[0]
        self.eps_slider = widgets.SelectionSlider(
            options=[(f"{v:g}", v) for v in self.eps_values],
            value=initial,
            description="ε",
            continuous_update=False,
            layout=widgets.Layout(width="300px"),
        )
        self.eps_box = widgets.FloatText(
            value=eps0, description="ε =", step=0.05, layout=widgets.Layout(width="150px")
        )
        self.eps_box.add_class("pflow-input")
        self.steps_box = widgets.IntText(
            value=self._n, description="steps", layout=widgets.Layout(width="150px")
        )
        self.steps_box.add_class("pflow-input")
        self.status = widgets.HTML()
        self.readout = widgets.HTML()

        send_values(self, self.set_eps, self.eps_slider, self.eps_box)
        send_values(self, self.set_n_steps, self.steps_box)

        eps_row = widgets.HBox([self.eps_slider, self.eps_box, self.steps_box, self.status])
        super().__init__([self.figure, steps_row, eps_row, self.readout, self.message])
        self.step_to(self._step)

    # --- state ------------------------------------------------------------------------

    state = shown("_state", "The last good :class:`StepperState` (what the figure shows).")
    eps = shown("_state.eps", "The eps of the SDE now shown.")

    @property
    def n_steps(self) -> int:
        """The last step index T (the time grid has T + 1 points)."""
        return self._state.times.shape[0] - 1

    ode = shown("_state.ode", "ODE trajectories (T+1, n, 2) now shown.")
    sde = shown("_state.sde", "SDE trajectories (T+1, n, 2) now shown.")
    distances = shown(
        "_state.distances",
        '{"ODE"|"SDE": {"energy": D^2, "sliced_w2": SW2}} of the final samples to target.',
    )

    def _distances(self, ode_end: np.ndarray, sde_end: np.ndarray) -> dict[str, dict[str, float]]:
        out = {}
        for name, end in (("ODE", ode_end), ("SDE", sde_end)):
            x = torch.as_tensor(end, dtype=torch.float64)
            gen = torch.Generator().manual_seed(self.seed)  # same directions for both
            out[name] = {
                "energy": energy_distance(x, self._target),
                "sliced_w2": sliced_w2(x, self._target, METRIC_PROJECTIONS, gen),
            }
        return out

    def _computed(self, eps: float, n_steps: int) -> StepperState:
        """Integrate (ODE only when the grid changed) and measure; raises ValueError."""
        eps, n_steps = _eps(eps), _n_steps(n_steps)
        start = time.perf_counter()
        times = torch.linspace(*self.t_range, n_steps + 1, dtype=torch.float64)
        with single_threaded():
            if self._ode_cache is None or self._ode_cache[0] != n_steps:
                ode = _finite(ode_trajectories(self._b, self._x0, times, self.ode_method), "ODE")
                self._ode_cache = (n_steps, ode)
            ode = self._ode_cache[1]
            sde = _finite(
                sde_trajectories(self._b, self._s, eps, self._x0, times, self.seed, self._sde_step),
                "SDE",
            )
            dist = None if self._target is None else self._distances(ode[-1], sde[-1])
        self.last_compute_s = time.perf_counter() - start
        return StepperState(times.numpy(), ode, sde, eps, dist)

    def _resample(self, eps: Any, n_steps: Any) -> bool:
        """Recompute for (eps, n_steps) and redraw; bad values show a message, return False."""
        slow = self.last_compute_s > SLOW_NOTE_S
        if slow:
            self.status.value = "<i>computing&hellip;</i>"
        try:
            with shown_errors(self.message) as outcome:
                state = self._computed(eps, n_steps)
        finally:
            if slow:
                self.status.value = ""
        if not outcome.ok:
            return show_rejected(
                self.message,
                describe_error(outcome.error),
                f"Showing the previous picture (ε = {self.eps:g}, {self.n_steps} steps)",
            )
        at_end = self._step == self.n_steps
        self._state = state
        self._step = self.n_steps if at_end else min(self._step, self.n_steps)
        self._sync_controls()
        self._draw_paths(self.figure)
        self.step_to(self._step)
        return True

    def set_eps(self, eps: float) -> bool:
        """Resample the SDE with this eps (same seed); True on success, never raises."""
        return self._resample(eps, self.n_steps)

    def set_n_steps(self, n_steps: int) -> bool:
        """Recompute both models on a grid of n_steps steps; True on success, never raises."""
        return self._resample(self.eps, n_steps)

    def _sync_controls(self) -> None:
        """Boxes, eps slider, step slider and Play follow the state, without callbacks."""
        self._fit_step_range()
        with quietly(self):
            if self.eps in self.eps_values:
                self.eps_slider.value = self.eps
            self.eps_box.value = self.eps
            self.steps_box.value = self.n_steps

    # --- drawing ----------------------------------------------------------------------

    def _empty_figure(self, height: int) -> go.Figure:
        fig = make_subplots(
            rows=1,
            cols=2,
            horizontal_spacing=0.06,
            subplot_titles=("ODE  dX = b dt", "SDE"),
        )
        for col, color in ((1, ODE_COLOR), (2, SDE_COLOR)):
            styles = {
                "target": marker_style(TARGET_COLOR, 3),
                "paths": line_style(FULL_PATH_COLOR, 1),
                "so far": line_style(TRACED_COLOR, 1.8),
                "particles": marker_style(color, 4),
            }
            for name in PANEL_TRACES:
                skip = dict(hoverinfo="skip") if name != "particles" else {}
                fig.add_trace(go.Scatter(name=name, **styles[name], **skip), 1, col)
        if self._target is not None:
            tgt = self._target.to(torch.float32).numpy()
            for panel in (0, 1):
                fig.data[panel * len(PANEL_TRACES)].update(x=tgt[:, 0], y=tgt[:, 1])
        xlim, ylim = self._limits()
        fig.update_xaxes(range=list(xlim), constrain="domain", zeroline=False)
        fig.update_yaxes(range=list(ylim), constrain="domain", zeroline=False)
        fig.update_yaxes(scaleanchor="x", scaleratio=1, row=1, col=1)
        fig.update_yaxes(scaleanchor="x2", scaleratio=1, row=1, col=2)
        fig.update_layout(
            **figure_layout(height=height, margin=margins(bottom=30), showlegend=False)
        )
        return fig

    def _limits(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """Axis ranges from x0, the target and the first trajectories, ignoring far outliers."""
        pts = [self._x0.to(torch.float32).numpy(), self._state.ode[-1], self._state.sde[-1]]
        if self._target is not None:
            pts.append(self._target.to(torch.float32).numpy())
        allp = np.concatenate(pts)
        lo, hi = np.quantile(allp, 0.005, axis=0), np.quantile(allp, 0.995, axis=0)
        pad = 0.1 * np.maximum(hi - lo, 1e-3)
        return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])

    def _panel(self, fig: go.Figure, panel: int, name: str) -> Any:
        return fig.data[panel * len(PANEL_TRACES) + PANEL_TRACES.index(name)]

    def _draw_paths(self, fig: go.Figure) -> None:
        """The full paths of the highlighted particles (they change with eps and n_steps)."""
        with fig.batch_update():
            for panel, traj in enumerate((self._state.ode, self._state.sde)):
                x, y = polylines(traj[:, self._shown])
                self._panel(fig, panel, "paths").update(x=x, y=y)
            fig.layout.annotations[1].text = f"SDE  ε = {self.eps:g}"

    def _draw_step(self, fig: go.Figure) -> None:
        i = self._step
        with fig.batch_update():
            for panel, traj in enumerate((self._state.ode, self._state.sde)):
                x, y = polylines(traj[: i + 1, self._shown])
                self._panel(fig, panel, "so far").update(x=x, y=y)
                now = traj[i]
                self._panel(fig, panel, "particles").update(x=now[:, 0], y=now[:, 1])

    def _write_readout(self) -> None:
        st, i = self._state, self._step
        self.time_label.value = f"t = {st.times[i]:.3f}"
        line = (
            f"step {i} of {self.n_steps}, t = {st.times[i]:.3f}, n = {st.ode.shape[1]}; "
            f"ODE: Heun, SDE: Euler-Maruyama with ε = {st.eps:g}, seed {self.seed}"
        )
        if st.distances is not None:
            d = st.distances
            line += (
                "<br>final samples vs target: energy distance "
                f"ODE {d['ODE']['energy']:.4f}, SDE {d['SDE']['energy']:.4f}; "
                f"sliced W2 ODE {d['ODE']['sliced_w2']:.4f}, SDE {d['SDE']['sliced_w2']:.4f}"
            )
        self.readout.value = line

    play_follows = True  # StepControls.step_to moves the kernel-side Play value too

    def _show_step(self, i: int) -> None:
        """Draw step i (StepControls.step_to checks it first) in both panels."""
        self._draw_step(self.figure)
        self._write_readout()
