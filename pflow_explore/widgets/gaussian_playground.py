"""A 2D/3D Gaussian whose probability flow is drawn live from the closed form (docs/papers.md §01).

Data N(mu, Sigma), Sigma = R diag(lambda) R^T with R a rotation (2D: by ``angle``; 3D: about
the z axis by ``angle`` after a tilt about the x axis). From noise x_T the exact PF-ODE
trajectory is :meth:`GaussianFlow.ve_solution` over a sigma grid (VE / EDM) or
:meth:`GaussianFlow.vp_solution` over an abar grid (VP): no ODE solver, so a parameter change
costs milliseconds (measured in ``benchmarks/playground_latency.py``).

The figure, bottom to top: data samples, the 1 and 2 sigma ellipses of the data (in 3D the
ellipses in the three planes of pairs of eigenvectors), the 1 sigma ellipse of the marginal
p_t at the current step, the eigenvector axes u_k (numbered by decreasing lambda_k, as
GaussianFlow orders them), the full trajectories, the x0-estimates D(x_t) along them
(dotted), the trajectories traced up to the current step, the start points x_T, and at the
current step x_t, its x0-estimate and a segment joining the two. The readout gives the
current sigma and the feature shares f_k(sigma) = sqrt(lambda_k / (lambda_k + sigma^2)).

In VP mode sigma is the equivalent VE noise level sigma = sqrt((1 - abar) / abar), because
x_t / sqrt(abar) = x0 + sigma z: the feature shares and the denoiser depend on the step
only through it.
"""

from __future__ import annotations

import contextlib
import html
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch

from pflow_explore.paths import VPLinear, karras_sigmas
from pflow_explore.scale import single_threaded
from pflow_explore.theory.gaussian_flow import GaussianFlow
from pflow_explore.viz.arrays import as_numpy, padded_range
from pflow_explore.viz.points import SAMPLE_COLOR, plane_layout
from pflow_explore.viz.style import GREEN, ORANGE, figure_layout, line_style, margins, marker_style
from pflow_explore.widgets.controls import checked_number, shown
from pflow_explore.widgets.live_figure import ENV_BUNDLE, LiveFigure, can_draw
from pflow_explore.widgets.messages import (
    describe_error,
    message_label,
    show_message,
    show_rejected,
    shown_errors,
)
from pflow_explore.widgets.stepping import StepControls
from pflow_explore.widgets.trajectory import FULL_PATH_COLOR, TRACED_PATH_COLOR

F64 = torch.float64
MAX_EIGENVALUE = 1000.0
ESTIMATE_COLOR = ORANGE
AXIS_COLOR = GREEN
MODES = ("VE", "VP")

# The lean plotly bundle (widgets/live_figure.py) leaves out WebGL's 3D traces.
NO_3D = (
    "3D needs plotly's scatter3d, which the lean plotly bundle this server uses leaves out "
    f"(WebGL, megabytes more for every page): serve with {ENV_BUNDLE}=full, or add "
    "scatter3d to js/plotly-bundle/traces.json and run `make bundle`."
)

# Trace names in drawing order; both figures (2D and 3D) hold them in this order.
TRACES = (
    "data",
    "1 sigma",
    "2 sigma",
    "p_t (1 sigma)",
    "eigenvectors",
    "paths",
    "x0-estimate paths",
    "so far",
    "x_T",
    "x_t to estimate",
    "x_t",
    "x0-estimate",
)


def rotation(angle_deg: float, tilt_deg: float = 0.0, dim: int = 2) -> np.ndarray:
    """The eigenbasis R (dim, dim), eigenvector u_k = column k.

    2D: R = [[cos a, -sin a], [sin a, cos a]]. 3D: R = R_z(a) R_x(b), a tilt by b about the
    x axis followed by the turn a about the z axis (angles in degrees).
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")
    a, b = math.radians(angle_deg), math.radians(tilt_deg)
    turn = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    if dim == 2:
        return turn
    rz = np.eye(3)
    rz[:2, :2] = turn
    rx = np.eye(3)
    rx[1:, 1:] = [[math.cos(b), -math.sin(b)], [math.sin(b), math.cos(b)]]
    return rz @ rx


def default_sigmas(n_steps: int, sigma_max: float) -> np.ndarray:
    """EDM's grid (Karras, rho = 7) from sigma_max down to 0.002, then 0: (n_steps + 1,)."""
    return karras_sigmas(n_steps, sigma_min=0.002, sigma_max=sigma_max).numpy()


def default_abars(n_steps: int) -> np.ndarray:
    """abar = alpha(t)^2 of the linear-beta VP schedule at t = 1, ..., 0: (n_steps + 1,).

    abar_T = abar(1) ~ 4e-5 is kept (not set to 0), and the grid ends at abar = 1 (the data).
    """
    t = torch.linspace(1.0, 0.0, n_steps + 1, dtype=F64)
    return (VPLinear().alpha(t) ** 2).numpy()


def equivalent_sigma(abar: np.ndarray) -> np.ndarray:
    """sigma = sqrt((1 - abar) / abar): x_t / sqrt(abar) = x0 + sigma z for x_t on the VP path."""
    return np.sqrt((1.0 - abar) / abar)


def _grid(values: Any, name: str, lo: float, hi: float | None, open_lo: bool) -> np.ndarray:
    g = as_numpy(values, name)
    if g.ndim != 1 or g.shape[0] < 2:
        raise ValueError(f"{name} must be 1-D with at least 2 points, got shape {g.shape}")
    bad = ~np.isfinite(g) | ((g <= lo) if open_lo else (g < lo))
    if hi is not None:
        bad |= g > hi
    if bad.any():
        interval = f"{'(' if open_lo else '['}{lo}, {hi if hi is not None else 'inf'}"
        interval += "]" if hi is not None else ")"
        raise ValueError(f"{name} must lie in {interval}, got {g[bad][0]}")
    return g


def ellipse_points(
    center: np.ndarray, scales: np.ndarray, axes: np.ndarray, levels: Sequence[float], n: int = 73
) -> np.ndarray:
    """Ellipses center + r (s_j cos t u_j + s_k sin t u_k) for each pair j < k, each level r.

    center (d,), scales (d,) (standard deviations along the axes), axes (d, d) with u_k as
    column k. Returns ((pairs * levels) (n + 1), d): each ellipse's n points then a NaN break.
    """
    t = np.linspace(0.0, 2 * math.pi, n)
    d = center.shape[0]
    out = []
    for r in levels:
        for j in range(d):
            for k in range(j + 1, d):
                pts = center + r * (
                    np.outer(np.cos(t), scales[j] * axes[:, j])
                    + np.outer(np.sin(t), scales[k] * axes[:, k])
                )
                out += [pts, np.full((1, d), np.nan)]
    return np.concatenate(out)


def _polylines(paths: np.ndarray) -> np.ndarray:
    """paths (L, n, d) -> (n (L + 1), d): path j's L points, then a NaN break."""
    length, n, d = paths.shape
    flat = np.full((n, length + 1, d), np.nan)
    flat[:, :length] = np.swapaxes(paths, 0, 1)
    return flat.reshape(n * (length + 1), d)


@dataclass(frozen=True)
class PlaygroundState:
    """Everything one parameter setting draws; replaced as a whole, so it is always consistent.

    z: (n, d) the noise of the start points; trajectories and estimates: (m, n, d), step 0 =
    x_T; grid: (m,) the sigmas (VE) or abars
    (VP); sigmas: (m,) the (equivalent) VE noise levels; shares: (m, d) f_k(sigma_i), k in
    decreasing-lambda order.
    """

    dim: int
    mode: str
    flow: GaussianFlow
    z: np.ndarray
    grid: np.ndarray
    sigmas: np.ndarray
    trajectories: np.ndarray
    estimates: np.ndarray
    shares: np.ndarray


class GaussianPlayground(StepControls, widgets.VBox):
    """The exact probability flow of a 2D (or 3D) Gaussian, with a time scrubber.

    Children, top to bottom: the figure area (a ``go.FigureWidget`` updated in place; a
    second one, of go.Scatter3d traces, is built on the first switch to 3D, and the one not
    in use is hidden), Play / Prev / Next / the step slider (the first slider of the widget)
    and the current sigma, the readout of feature shares, the VE/VP and 2D/3D toggles and
    the resample button, the eigenvalue boxes (CSS class ``pflow-input``) with the message
    line under them, the angle sliders, and the sliders of the picked path's noise z.

    Start points: x_T = mu + sigma_T z (VE) or sqrt(abar_T) mu + sqrt(1 - abar_T) z (VP), so
    the same noise z gives comparable starts in both modes. Path 0 takes z from the sliders;
    paths 1..n_paths-1 take z ~ N(0, I), redrawn by "resample x_T".

    ``sigmas`` (VE grid, any values >= 0, from sigma_T at index 0 to the data end) and
    ``abars`` (VP grid in (0, 1]) default to EDM's Karras grid from ``sigma_max`` and the
    linear-beta VP schedule, both with ``n_steps`` steps. Bad input (a non-positive or NaN
    eigenvalue) shows a message under the boxes and keeps the last good picture.
    """

    play_follows = True

    def __init__(
        self,
        eigenvalues: Sequence[float] = (4.0, 0.25, 1.0),
        angle: float = 30.0,
        tilt: float = 20.0,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        mode: str = "VE",
        dim: int = 2,
        n_paths: int = 8,
        n_steps: int = 40,
        sigma_max: float = 4.0,
        sigmas: Any = None,
        abars: Any = None,
        seed: int = 0,
        interval_ms: int = 120,
        n_samples: int = 300,
    ) -> None:
        lam = [float(v) for v in eigenvalues]
        if len(lam) not in (2, 3):
            raise ValueError(f"eigenvalues must hold 2 or 3 numbers, got {len(lam)}")
        lam = (lam + [1.0])[:3]
        mu = as_numpy(mean, "mean")
        if mu.shape not in ((2,), (3,)) or not np.isfinite(mu).all():
            raise ValueError(f"mean must hold 2 or 3 finite numbers, got {mean!r}")
        self._mean = np.concatenate([mu, [0.0]])[:3]
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim!r}")
        if int(n_paths) != n_paths or n_paths < 1:
            raise ValueError(f"n_paths must be an integer >= 1, got {n_paths!r}")
        if int(n_steps) != n_steps or n_steps < 2:
            raise ValueError(f"n_steps must be an integer >= 2, got {n_steps!r}")
        checked_number(sigma_max, "sigma_max", 0.002, above=True)
        self._grids = {
            "VE": _grid(
                default_sigmas(int(n_steps), sigma_max) if sigmas is None else sigmas,
                "sigmas",
                0.0,
                None,
                False,
            ),
            "VP": _grid(
                default_abars(int(n_steps)) if abars is None else abars, "abars", 0.0, 1.0, True
            ),
        }
        self._rng = np.random.default_rng(seed)
        # One noise per path; sliders drive path 0. Three coordinates, 2D uses the first two.
        self._z = self._rng.standard_normal((int(n_paths), 3))
        self._z[0] = [1.5, 1.0, 0.5]
        self._data_noise = np.random.default_rng(seed + 1).standard_normal((int(n_samples), 3))
        self._hold = False  # True while several controls change at once
        self._step = 0
        self._state: PlaygroundState | None = None
        self._figures: dict[int, go.FigureWidget] = {}
        self._frames: dict[int, widgets.Box] = {}  # one per figure, hidden when not in use

        self._build_controls(lam, angle, tilt, mode, dim, interval_ms)
        if dim == 3 and not can_draw("scatter3d"):
            raise ValueError(NO_3D)
        with single_threaded():
            self._state = self._computed()  # invalid constructor arguments raise here
        self.figure_area = widgets.VBox([self._drawn_figure(self._state.dim)])
        super().__init__(
            [
                self.figure_area,
                self.steps_row,
                self.readout,
                widgets.HBox([self.mode_toggle, self.dim_toggle, self.resample_button]),
                widgets.HBox(self.eigenvalue_boxes),
                self.message,
                widgets.HBox([self.angle_slider, self.tilt_slider]),
                widgets.HBox(self.z_sliders),
            ]
        )
        self._show_dim_controls(self._state.dim)
        self._sync_slider_range()

    # --- controls ---------------------------------------------------------------------

    def _build_controls(
        self,
        lam: list[float],
        angle: float,
        tilt: float,
        mode: str,
        dim: int,
        interval_ms: int,
    ) -> None:
        # no state yet, so no n_steps: the grid of the starting mode sets the range
        self.steps_row = self.step_row(interval_ms, last=len(self._grids[mode]) - 1)
        self.readout = widgets.HTML()
        self.message = message_label()

        self.mode_toggle = widgets.ToggleButtons(
            options=list(MODES),
            value=mode,
            tooltips=["variance exploding: x = x0 + sigma z", "variance preserving"],
            style={"button_width": "48px"},
        )
        self.dim_toggle = widgets.ToggleButtons(
            options=[("2D", 2), ("3D", 3)],
            value=dim,
            # where this server cannot draw 3D, the button says so before it is pressed
            tooltips=["the plane", "3D space" if can_draw("scatter3d") else NO_3D],
            style={"button_width": "48px"},
        )
        self.resample_button = widgets.Button(
            description="resample x_T", icon="random", tooltip="new noise for paths 2, 3, ..."
        )
        self.eigenvalue_boxes = [
            widgets.FloatText(
                value=v,
                description=f"λ{k + 1}",
                step=0.05,
                style={"description_width": "24px"},
                layout=widgets.Layout(width="150px"),  # one each: box 3 alone gets hidden
            )
            for k, v in enumerate(lam)
        ]
        for box in self.eigenvalue_boxes:
            box.add_class("pflow-input")  # validated: the browser test types bad values here
        self.angle_slider = widgets.FloatSlider(
            value=float(angle), min=-90, max=90, step=1, description="angle °"
        )
        self.tilt_slider = widgets.FloatSlider(
            value=float(tilt), min=-90, max=90, step=1, description="tilt °"
        )
        self.z_sliders = [
            widgets.FloatSlider(
                value=float(self._z[0, k]),
                min=-3,
                max=3,
                step=0.05,
                description=f"z{k + 1} of x_T",
                layout=widgets.Layout(width="280px"),
            )
            for k in range(3)
        ]

        self.resample_button.on_click(lambda _: self.resample())
        parameters = [self.mode_toggle, self.dim_toggle, self.angle_slider, self.tilt_slider]
        for control in parameters + self.eigenvalue_boxes + self.z_sliders:
            control.observe(self._on_parameter, names="value")

    def _show_dim_controls(self, dim: int) -> None:
        hidden = "none" if dim == 2 else None
        for control in (self.eigenvalue_boxes[2], self.tilt_slider, self.z_sliders[2]):
            control.layout.display = hidden

    @contextlib.contextmanager
    def _holding(self) -> Iterator[None]:
        """Change several controls with one recompute at the end (by the caller)."""
        self._hold = True
        try:
            yield
        finally:
            self._hold = False

    def _on_parameter(self, change: dict[str, Any]) -> None:
        if not self._hold:
            self.update()

    # --- parameters -> state ----------------------------------------------------------

    def _eigenvalues(self, dim: int) -> np.ndarray:
        lam = []
        for k, box in enumerate(self.eigenvalue_boxes[:dim]):
            v = box.value
            if v is None or not math.isfinite(v) or not 0 < v <= MAX_EIGENVALUE:
                raise ValueError(
                    f"eigenvalue λ{k + 1} must be a variance in (0, {MAX_EIGENVALUE:g}], got {v!r}"
                )
            lam.append(float(v))
        return np.array(lam)

    def _computed(self) -> PlaygroundState:
        """The state for the current controls (raises ValueError for bad values)."""
        dim, mode = int(self.dim_toggle.value), str(self.mode_toggle.value)
        lam = self._eigenvalues(dim)
        axes = rotation(self.angle_slider.value, self.tilt_slider.value, dim)
        mu = torch.as_tensor(self._mean[:dim], dtype=F64)
        flow = GaussianFlow.from_spectrum(mu, torch.as_tensor(lam), torch.as_tensor(axes))
        grid = self._grids[mode]
        g = torch.as_tensor(grid, dtype=F64)
        noise = self._z.copy()
        noise[0] = [slider.value for slider in self.z_sliders]
        z = torch.as_tensor(noise[:, :dim], dtype=F64)
        n, m = z.shape[0], grid.shape[0]
        if mode == "VE":
            x_T = mu + g[0] * z
            paths = flow.ve_solution(x_T, g[0], g)  # (m, n, d)
            levels = g.repeat_interleave(n)
            estimates = flow.ve_denoiser(paths.reshape(m * n, dim), levels)
            sigmas = grid
        else:
            x_T = g[0].sqrt() * mu + (1 - g[0]).sqrt() * z
            paths = flow.vp_solution(x_T, g[0], g)
            estimates = flow.vp_denoiser(paths.reshape(m * n, dim), g.repeat_interleave(n))
            sigmas = equivalent_sigma(grid)
        shares = flow.feature_share(torch.as_tensor(sigmas, dtype=F64))
        return PlaygroundState(
            dim=dim,
            mode=mode,
            flow=flow,
            z=noise[:, :dim],
            grid=grid,
            sigmas=sigmas,
            trajectories=paths.numpy(),
            estimates=estimates.reshape(m, n, dim).numpy(),
            shares=shares.numpy(),
        )

    def update(self) -> bool:
        """Recompute from the controls and redraw; True on success.

        Bad values show a message under the eigenvalue boxes and keep the last good picture
        (and return False); never raises.
        """
        if int(self.dim_toggle.value) == 3 and not can_draw("scatter3d"):
            with self._holding():  # back to the figure that draws; the message says why
                self.dim_toggle.value = self.state.dim
            show_message(self.message, NO_3D, "warning")
            return False
        with shown_errors(self.message) as outcome, single_threaded():
            state = self._computed()
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "Showing the previous picture")
        old_dim = self.state.dim
        self._state = state
        self._step = min(self._step, self.n_steps)
        built = False
        if state.dim != old_dim:
            # Both figures stay in the page and only their frames are hidden: a FigureWidget
            # whose view is removed and re-created stops accepting updates in the browser
            # (plotly 6: "Error setting state ... reading 'length'").
            self._frames[old_dim].layout.display = "none"
            if state.dim in self._frames:
                self._frames[state.dim].layout.display = None  # shown before it is drawn
            else:
                area = self.figure_area
                area.children = (*area.children, self._drawn_figure(state.dim))
                built = True
            self._show_dim_controls(state.dim)
        if not built:
            self._draw(self.figure)
        self._sync_slider_range()
        return True

    def set_parameters(
        self,
        eigenvalues: Sequence[float] | None = None,
        angle: float | None = None,
        tilt: float | None = None,
        mode: str | None = None,
        dim: int | None = None,
        z: Sequence[float] | None = None,
    ) -> bool:
        """Set several controls, then recompute once (what a reader does with the controls).

        eigenvalues: 2 or 3 numbers (lambda_1, lambda_2[, lambda_3]); angle, tilt in degrees;
        mode "VE"/"VP"; dim 2/3; z: the picked path's noise (2 or 3 numbers). Returns
        :meth:`update`'s result: bad values give a message and False, never an exception.
        """
        with self._holding(), shown_errors(self.message) as outcome:
            if mode is not None:
                if mode not in MODES:  # clearer than the toggle's TraitError
                    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
                self.mode_toggle.value = mode
            if dim is not None:
                if dim not in (2, 3):
                    raise ValueError(f"dim must be 2 or 3, got {dim!r}")
                self.dim_toggle.value = dim
            values = () if eigenvalues is None else eigenvalues
            for box, v in zip(self.eigenvalue_boxes, values, strict=False):
                box.value = float(v)
            if angle is not None:
                self.angle_slider.value = float(angle)
            if tilt is not None:
                self.tilt_slider.value = float(tilt)
            for slider, v in zip(self.z_sliders, () if z is None else z, strict=False):
                slider.value = float(v)
        # a control set before the error stays set: update() draws it, then the error shows
        drawn = self.update()
        if outcome.error is not None:
            show_message(self.message, describe_error(outcome.error))
            return False
        return drawn

    def resample(self, seed: int | None = None) -> bool:
        """New noise z ~ N(0, I) for paths 1..n_paths-1 (path 0 follows the sliders)."""
        rng = self._rng if seed is None else np.random.default_rng(seed)
        self._z[1:] = rng.standard_normal(self._z[1:].shape)
        return self.update()

    # --- reading the state --------------------------------------------------------------

    @property
    def state(self) -> PlaygroundState:
        """The last good :class:`PlaygroundState` (what the figure shows)."""
        assert self._state is not None
        return self._state

    @property
    def figure(self) -> go.FigureWidget:
        """The FigureWidget now shown: one for 2D, one for 3D (built on the first switch)."""
        return self._figures[self.state.dim]

    flow = shown("state.flow", "The GaussianFlow N(mu, Sigma) now drawn.")

    @property
    def n_steps(self) -> int:
        """The last step index (the grid has n_steps + 1 points)."""
        return self.state.grid.shape[0] - 1

    @property
    def x_T(self) -> np.ndarray:
        """Start points (n_paths, d) of the drawn trajectories."""
        return self.state.trajectories[0]

    @property
    def z(self) -> np.ndarray:
        """The noise (n_paths, d) the drawn start points are made of (row 0: the sliders)."""
        return self.state.z.copy()

    @property
    def sigma(self) -> float:
        """The (equivalent VE) noise level at the current step."""
        return float(self.state.sigmas[self._step])

    @property
    def feature_shares(self) -> np.ndarray:
        """f_k(sigma) at the current step, (d,), k in decreasing-lambda order."""
        return self.state.shares[self._step]

    # --- figures ----------------------------------------------------------------------

    def _drawn_figure(self, dim: int) -> widgets.Box:
        """A new FigureWidget for ``dim`` holding the current state from the start, framed.

        Why drawn first and wrapped after: a frontend that connects later (Voila renders
        after the notebook ran) builds its view from the FigureWidget's construction-time
        data; updates made before that are never replayed to it.
        """
        draft = self._empty_figure(dim)
        self._draw(draft)
        self._figures[dim] = LiveFigure(draft)
        self._frames[dim] = widgets.Box([self._figures[dim]])
        return self._frames[dim]

    def _empty_figure(self, dim: int) -> go.Figure:
        three = dim == 3
        trace_type = go.Scatter3d if three else go.Scatter
        msize = 0.6 if three else 1.0  # 3D markers look larger at the same size
        styles: dict[str, dict[str, Any]] = {
            "data": marker_style("rgba(140,140,140,0.35)", 4 * msize),
            "1 sigma": line_style("#555", 1.5),
            "2 sigma": line_style("#555", 1, dash="dash"),
            "p_t (1 sigma)": line_style("rgba(31,119,180,0.6)", 1.5, dash="dot"),
            "eigenvectors": dict(
                mode="lines+text",
                line=dict(color=AXIS_COLOR, width=2.5),
                textfont=dict(color=AXIS_COLOR),
                **({} if three else dict(textposition="top center")),
            ),
            "paths": line_style(FULL_PATH_COLOR, 1.5),
            "x0-estimate paths": line_style("rgba(255,127,14,0.45)", 1.2, dash="dot"),
            "so far": line_style(TRACED_PATH_COLOR, 2.5),
            "x_T": dict(  # the picked path (sliders) in red
                mode="markers",
                marker=dict(
                    symbol="circle-open",
                    color=["#d62728"] + ["#333"] * (self._z.shape[0] - 1),
                    size=8 * msize,
                ),
            ),
            "x_t to estimate": line_style(ESTIMATE_COLOR, 1),
            "x_t": marker_style(SAMPLE_COLOR, 9 * msize),
            "x0-estimate": dict(  # Scatter3d's "x" draws as a box in some WebGL fallbacks
                mode="markers",
                marker=dict(
                    symbol="diamond" if three else "x", color=ESTIMATE_COLOR, size=9 * msize
                ),
            ),
        }
        data = []
        for name in TRACES:
            extra = dict(hoverinfo="skip") if name in ("paths", "so far", "data") else {}
            data.append(trace_type(name=name, **styles[name], **extra))
        if three:
            layout = figure_layout(
                height=520, margin=margins(0, 0, 10, 0), scene=dict(aspectmode="cube")
            )
        else:
            layout = plane_layout(None, height=480)
        layout.update(
            showlegend=True, legend=dict(orientation="v", x=1.02, y=1, font=dict(size=11))
        )
        return go.Figure(data=data, layout=layout)

    @staticmethod
    def _put(
        fig: go.Figure, name: str, points: np.ndarray, text: Sequence[str] | None = None
    ) -> None:
        """Set trace ``name``'s coordinates from points (k, d); float32 halves what is sent."""
        trace = fig.data[TRACES.index(name)]
        p = points.astype(np.float32)
        trace.x, trace.y = p[:, 0], p[:, 1]
        if p.shape[1] == 3:
            trace.z = p[:, 2]
        if text is not None:
            trace.text = list(text)

    def _sync_slider_range(self) -> None:
        """Slider and Play span the grid (:meth:`StepControls._fit_step_range`)."""
        self._fit_step_range()

    def _draw(self, fig: go.Figure) -> None:
        """Draw everything that depends on the parameters into ``fig``, then the step."""
        s = self.state
        flow = s.flow
        mu = flow.mean.numpy()
        lam = flow.eigenvalues.numpy()
        axes = flow.eigenvectors.numpy()
        sd = np.sqrt(lam)
        samples = mu + (self._data_noise[:, : s.dim] * sd) @ axes.T
        axis_pts, axis_text = [], []
        for k in range(s.dim):
            axis_pts += [mu - 2 * sd[k] * axes[:, k], mu + 2 * sd[k] * axes[:, k], mu * np.nan]
            axis_text += ["", f"u{k + 1}", ""]
        paths = _polylines(s.trajectories)
        with fig.batch_update():
            self._put(fig, "data", samples)
            self._put(fig, "1 sigma", ellipse_points(mu, sd, axes, [1.0]))
            self._put(fig, "2 sigma", ellipse_points(mu, sd, axes, [2.0]))
            self._put(fig, "eigenvectors", np.array(axis_pts), axis_text)
            self._put(fig, "paths", paths)
            self._put(fig, "x0-estimate paths", _polylines(s.estimates))
            self._put(fig, "x_T", s.trajectories[0])
            self._set_ranges(fig, np.concatenate([paths, ellipse_points(mu, sd, axes, [2.0])]))
            self._draw_step(fig)
        self._write_readout()

    def _set_ranges(self, fig: go.Figure, points: np.ndarray) -> None:
        if self.state.dim == 2:
            fig.layout.xaxis.range = padded_range(points[:, 0])
            fig.layout.yaxis.range = padded_range(points[:, 1])
            return
        finite = points[np.isfinite(points).all(axis=1)]
        lo, hi = finite.min(axis=0), finite.max(axis=0)
        center, half = (lo + hi) / 2, 0.55 * float((hi - lo).max())
        scene = fig.layout.scene
        for name, c in zip(("xaxis", "yaxis", "zaxis"), center, strict=True):
            scene[name].range = [c - half, c + half]

    def _marginal_ellipse(self, i: int) -> np.ndarray:
        """1 sigma ellipse(s) of p_t at step i: N(mu, Sigma + sigma^2 I) or
        N(sqrt(abar) mu, abar Sigma + (1 - abar) I); same eigenvectors as Sigma."""
        s = self.state
        mu, lam = s.flow.mean.numpy(), s.flow.eigenvalues.numpy()
        if s.mode == "VE":
            center, var = mu, lam + s.grid[i] ** 2
        else:
            a = s.grid[i]
            center, var = math.sqrt(a) * mu, a * lam + 1.0 - a
        return ellipse_points(center, np.sqrt(var), s.flow.eigenvectors.numpy(), [1.0])

    def _draw_step(self, fig: go.Figure) -> None:
        s, i = self.state, self._step
        now, est = s.trajectories[i], s.estimates[i]
        gap = np.full_like(now, np.nan)
        joins = np.stack([now, est, gap], axis=1).reshape(-1, s.dim)
        with fig.batch_update():
            self._put(fig, "so far", _polylines(s.trajectories[: i + 1]))
            self._put(fig, "p_t (1 sigma)", self._marginal_ellipse(i))
            self._put(fig, "x_t to estimate", joins)
            self._put(fig, "x_t", now)
            self._put(fig, "x0-estimate", est)

    def _write_readout(self) -> None:
        s, i = self.state, self._step
        sigma = s.sigmas[i]
        if s.mode == "VE":
            when = f"σ = {sigma:.3f}"
        else:
            when = f"ᾱ = {s.grid[i]:.4g} &nbsp;(σ = √((1−ᾱ)/ᾱ) = {sigma:.3f})"
        self.time_label.value = when
        rows = []
        lam = s.flow.eigenvalues.numpy()
        for k, f in enumerate(s.shares[i]):
            bar = (
                f'<span style="display:inline-block; width:{100 * f:.0f}px; height:9px; '
                f'background:{AXIS_COLOR};"></span>'
            )
            rows.append(
                f"<tr><td>u{k + 1}</td><td>λ = {lam[k]:.3f}</td><td>√λ = {math.sqrt(lam[k]):.3f}"
                f"</td><td><b>f = {f:.3f}</b></td><td>{bar}</td></tr>"
            )
        picked = ", ".join(f"{v:.2f}" for v in s.trajectories[0, 0])
        self.readout.value = (
            f"<div>step {i} of {self.n_steps} ({html.escape(s.mode)}), {when} &nbsp;|&nbsp; "
            f"picked x_T = ({picked})</div>"
            "<div>feature k fixed in the x0-estimate: "
            "f<sub>k</sub>(σ) = √(λ<sub>k</sub> / (λ<sub>k</sub> + σ²))</div>"
            f'<table style="font-size:90%">{"".join(rows)}</table>'
        )

    # --- stepping ---------------------------------------------------------------------

    def _show_step(self, i: int) -> None:
        """Grid point i (``step_to``): x_t, its x0-estimate, p_t and the readout; only the
        step-dependent traces change (one batched message)."""
        self._draw_step(self.figure)
        self._write_readout()
