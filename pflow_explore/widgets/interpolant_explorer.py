"""Scrub time through a stochastic interpolant: the exact density of x_t and its b or s field.

Card 02_interpolants: x_t = I(t, x0, x1) + gamma(t) z with x0 ~ rho0, x1 ~ rho1, z ~ N(0, I).
For Gaussian-mixture endpoints everything is exact (``theory.interpolant_fields``): the
density rho_t of x_t (a mixture over component pairs), the velocity
b(x, t) = E[d_t I + gamma' z | x_t = x] and the score s(x, t) = -E[z | x_t = x] / gamma.
Nothing is trained and nothing heavy is precomputed: each time-slider move evaluates
log rho_t on the grid (60 x 60 by default), the chosen field on a coarser arrow grid and,
optionally, a fixed set of samples of x_t (same seed at every t, so they move continuously):
about 12 ms of CPU, the drawing about 6 ms more. Pictures are kept per (t, field) until the
setting changes, so moving back (the slider's left-right) only draws.

Two interpolants constrain rho0 (``Interpolant.rho0_constraint``): "one_sided" needs
rho0 = N(0, I) and "mirror" needs rho0 = rho1; the explorer then uses that rho0, whatever
the rho0 menu says, and says so in the info line.

Time convention: flow (t = 0 is rho0, t = 1 is rho1).
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch

from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.interpolants import GAMMAS, INTERPOLANTS, Interpolant, get_interpolant
from pflow_explore.scale import single_threaded
from pflow_explore.theory.interpolant_fields import InterpolantFields
from pflow_explore.viz.fields import density_heatmap_trace, plane_grid, quiver_trace
from pflow_explore.viz.points import plane_layout, points_trace
from pflow_explore.widgets.controls import quietly, send_values, set_quietly, shown
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import (
    clear_message,
    describe_error,
    message_html,
    message_label,
    show_rejected,
    shown_errors,
)

FIELDS = ("b", "s", "none")
FIELD_NAMES = {"b": "velocity b(x, t)", "s": "score s(x, t)", "none": "no field"}
SAMPLE_COLOR = "rgba(255, 255, 255, 0.75)"
ARROW_COLOR = "rgba(255, 120, 40, 0.95)"
# Arrows are scaled so that the longest one where rho_t >= REFERENCE_MASS * max rho_t spans
# 0.9 arrow spacings; longer ones (far tails, where |s| grows linearly) are cut at one
# spacing, so the few huge arrows of a sharp score cannot shrink all the others to dots.
REFERENCE_MASS = 0.01
STANDARD_NORMAL_NAME = "N(0, I)"


def standard_normal(dim: int = 2) -> GaussianMixture:
    """N(0, I) in ``dim`` dimensions as a one-component mixture (the one-sided rho0)."""
    return GaussianMixture(
        torch.ones(1), torch.zeros(1, dim, dtype=torch.float64), torch.eye(dim)[None]
    )


def mixture_extent(mixtures: list[GaussianMixture], k: float = 3.0) -> tuple[float, float]:
    """A square window [lo, hi]^2 holding mu_i +- k sd_max of every component, plus 10 %.

    sd_max is the largest standard deviation of the component (sqrt of its largest
    eigenvalue); x_t also spreads by gamma(t) <= 1, within the 10 % margin for these scales.
    """
    lo, hi = [], []
    for m in mixtures:
        sd = torch.linalg.eigvalsh(m.covs)[:, -1].sqrt()[:, None]
        lo.append((m.means - k * sd).min(0).values)
        hi.append((m.means + k * sd).max(0).values)
    low = float(torch.stack(lo).min())
    high = float(torch.stack(hi).max())
    pad = 0.1 * (high - low)
    return (low - pad, high + pad)


def field_arrows(
    points: np.ndarray, vectors: np.ndarray, density: np.ndarray, spacing: float
) -> tuple[np.ndarray, float]:
    """Arrow shafts (N, 2) for ``vectors`` (N, 2) at ``points`` and the scale applied.

    scale = 0.9 spacing / max{|v_k| : density_k >= REFERENCE_MASS max density}; shafts
    longer than one spacing are shortened to it (direction kept). A zero or non-finite
    reference leaves scale = 1.
    """
    norms = np.linalg.norm(vectors, axis=1)
    where = density >= REFERENCE_MASS * density.max() if density.size else norms > 0
    ref = float(norms[where].max()) if where.any() else 0.0
    scale = 0.9 * spacing / ref if ref > 0 and math.isfinite(ref) else 1.0
    shafts = scale * vectors
    length = np.linalg.norm(shafts, axis=1, keepdims=True)
    shafts = np.where(length > spacing, shafts * spacing / np.maximum(length, 1e-300), shafts)
    return shafts, scale


@dataclass(frozen=True)
class ExplorerConfig:
    """One valid setting: the names chosen, the rho0 actually used and the exact fields."""

    rho0: str
    rho1: str
    interpolant: str
    gamma: str
    a: float
    rho0_used: str
    interp: Interpolant
    fields: InterpolantFields
    info: str


@dataclass(frozen=True)
class Picture:
    """What the figure shows at one time: density (n, n) on the grid [j, i] = (ys[j], xs[i]),
    the field's values at the arrow points (m, 2) and the drawn shafts (m, 2) (both None for
    "none"), the samples (k, 2), the arrow scale, and the mass on the grid sum(p) dx dy."""

    t: float
    density: np.ndarray
    vectors: np.ndarray | None
    field: np.ndarray | None
    samples: np.ndarray | None
    scale: float
    mass: float


class InterpolantExplorer(widgets.VBox):
    """Choose rho0, rho1, the interpolant and gamma; scrub t; see rho_t and the b or s field.

    densities: name -> 2D GaussianMixture (``datasets.toy2d.TOY_2D_MIXTURES`` builds some);
    rho0, rho1: names in ``densities``; interpolant: a key of ``INTERPOLANTS``; gamma: a key
    of ``GAMMAS``; gamma_scale: the a of gamma = sqrt(a t (1 - t)); grid: heatmap points per
    axis; extent: (lo, hi) of the square window (default: :func:`mixture_extent` of all the
    densities and N(0, I)); arrows: arrow points per axis; n_samples: samples of x_t drawn
    on top (0 for none).

    Children: the time slider t (the widget's first slider) with the readout of x_t's
    coefficients, the figure (heatmap of rho_t, arrows, samples), the menus rho0 / rho1 /
    interpolant / gamma, the text box "gamma a" (CSS class ``pflow-input``), the field
    toggle b / s / none and the samples checkbox, an info line, and the message line. A
    setting that is not valid (a <= 0, trigonometric with gamma reaching 1, ...) shows a
    message and keeps the last valid setting and picture; the time slider keeps working.
    """

    def __init__(
        self,
        densities: Mapping[str, GaussianMixture],
        rho0: str,
        rho1: str,
        interpolant: str = "linear",
        gamma: str = "sqrt",
        gamma_scale: float = 1.0,
        grid: int = 60,
        extent: tuple[float, float] | None = None,
        arrows: int = 15,
        n_samples: int = 200,
        field: str = "b",
        t: float = 0.5,
        seed: int = 0,
        height: int = 500,
    ) -> None:
        if not isinstance(densities, Mapping) or not densities:
            raise ValueError("densities must be a non-empty dict name -> GaussianMixture")
        for name, m in densities.items():
            if not isinstance(m, GaussianMixture) or m.dim != 2:
                raise ValueError(f"densities[{name!r}] must be a 2D GaussianMixture, got {m!r}")
        self.densities = dict(densities)
        if field not in FIELDS:
            raise ValueError(f"field must be one of {', '.join(FIELDS)}, got {field!r}")
        for value, name in ((grid, "grid"), (arrows, "arrows")):
            if isinstance(value, bool) or int(value) != value or value < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
        if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 0:
            raise ValueError(f"n_samples must be an integer >= 0, got {n_samples!r}")
        self.n_samples, self.seed = int(n_samples), int(seed)
        if extent is None:
            extent = mixture_extent([*self.densities.values(), standard_normal()])
        self.extent = (float(extent[0]), float(extent[1]))
        self.xs, self.ys, self.grid_points = plane_grid(self.extent, self.extent, int(grid))
        lo, hi = self.extent
        half = 0.5 * (hi - lo) / int(arrows)  # arrows sit at the centres of arrows^2 cells
        _, _, self.arrow_points = plane_grid((lo + half, hi - half), (lo + half, hi - half), arrows)
        self.arrow_spacing = 2 * half
        self._grid_t = torch.as_tensor(self.grid_points, dtype=torch.float64)
        self._arrows_t = torch.as_tensor(self.arrow_points, dtype=torch.float64)
        self._holding = False
        self._config_error = False
        self._pictures: dict[tuple[float, str], Picture] = {}  # of the setting shown

        self.message = message_label()
        self.info = widgets.HTML()
        self._config = self._configured(rho0, rho1, interpolant, gamma, gamma_scale)
        self._field = field
        self._show_samples = self.n_samples > 0
        self._picture = self._kept(self._pictured(self._config, float(t), field), field)

        draft = self._empty_figure(height)
        self._draw(draft, self._picture)
        self.figure = LiveFigure(draft)

        names = list(self.densities)
        self.time_slider = widgets.FloatSlider(
            value=float(t),
            min=0.0,
            max=1.0,
            step=0.01,
            description="t",
            readout_format=".2f",
            continuous_update=True,
            layout=widgets.Layout(width="420px"),
        )
        self.readout = widgets.HTML()
        self.rho0_menu = widgets.Dropdown(options=names, value=rho0, description="ρ₀")
        self.rho1_menu = widgets.Dropdown(options=names, value=rho1, description="ρ₁")
        self.interpolant_menu = widgets.Dropdown(
            options=list(INTERPOLANTS), value=interpolant, description="interpolant"
        )
        self.gamma_menu = widgets.Dropdown(options=list(GAMMAS), value=gamma, description="γ")
        self.a_box = widgets.FloatText(
            value=float(gamma_scale),
            description="γ a",
            step=0.1,
            tooltip="a in γ(t) = sqrt(a t (1 - t)); must be > 0",
            layout=widgets.Layout(width="160px"),
        )
        self.a_box.add_class("pflow-input")
        self.field_toggle = widgets.ToggleButtons(
            options=[("b", "b"), ("s", "s"), ("none", "none")],
            value=field,
            description="field",
            style={"button_width": "52px"},
        )
        self.samples_box = widgets.Checkbox(
            value=self.n_samples > 0, description="samples of x_t", indent=False
        )
        self.samples_box.disabled = self.n_samples == 0

        send_values(self, self.set_time, self.time_slider, flag="_holding")
        for control in (
            self.rho0_menu,
            self.rho1_menu,
            self.interpolant_menu,
            self.gamma_menu,
            self.a_box,
        ):
            control.observe(self._on_config, names="value")
        send_values(self, self.set_field, self.field_toggle, flag="_holding")
        self.samples_box.observe(self._on_samples, names="value")

        super().__init__(
            [
                widgets.HBox([self.time_slider, self.readout]),
                self.figure,
                widgets.HBox([self.rho0_menu, self.rho1_menu]),
                widgets.HBox([self.interpolant_menu, self.gamma_menu, self.a_box]),
                widgets.HBox([self.field_toggle, self.samples_box]),
                self.info,
                self.message,
            ]
        )
        self._after_config()

    # --- reading the state ------------------------------------------------------------

    config = shown("_config", "The last valid setting (what the figure shows).")
    fields = shown("_config.fields", "The exact fields of the setting shown.")
    picture = shown("_picture", "The last good picture.")
    t = shown("_picture.t", "The time now shown.")

    # --- computing --------------------------------------------------------------------

    def _configured(
        self, rho0: str, rho1: str, interpolant: str, gamma: str, a: Any
    ) -> ExplorerConfig:
        """Validate the choices and build the exact fields; ValueError names what is wrong."""
        for name, value in (("rho0", rho0), ("rho1", rho1)):
            if value not in self.densities:
                valid = ", ".join(self.densities)
                raise ValueError(f"{name} must be one of {valid}, got {value!r}")
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not math.isfinite(a):
            raise ValueError(f"γ a must be a finite number > 0, got {a!r}")
        if a <= 0:
            raise ValueError(f"γ a must be > 0 (γ(t) = sqrt(a t (1 - t))), got {a:g}")
        kw = {"a": float(a)} if gamma == "sqrt" else {}
        interp = get_interpolant(interpolant, gamma, **kw)
        constraint = interp.rho0_constraint
        if constraint == "standard_normal":
            used, source = STANDARD_NORMAL_NAME, standard_normal()
            info = (
                f"one-sided interpolant: ρ₀ is {STANDARD_NORMAL_NAME} (the noise), "
                f"so the ρ₀ menu ({rho0}) is not used."
            )
        elif constraint == "equals_rho1":
            used, source = rho1, self.densities[rho1]
            info = (
                f"mirror interpolant: ρ₀ = ρ₁ = {rho1}, x_t = x₁ + γ(t) z; the ρ₀ menu is not used."
            )
        else:
            used, source, info = rho0, self.densities[rho0], ""
        fields = InterpolantFields(source, self.densities[rho1], interp)
        return ExplorerConfig(rho0, rho1, interpolant, gamma, float(a), used, interp, fields, info)

    def _pictured(self, config: ExplorerConfig, t: float, field: str) -> Picture:
        """Evaluate rho_t on the grid, the field at the arrow points, the samples; ValueError
        when something is not finite (rho_t a point mass, s at gamma = 0 with a singular
        covariance, ...)."""
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 <= t <= 1:
            raise ValueError(f"t must be a number in [0, 1], got {t!r}")
        t = float(t)
        f = config.fields
        n = self.xs.shape[0]
        with single_threaded(), torch.no_grad():
            logp = f.log_prob(self._grid_t, t).to(torch.float64).numpy()
            if not np.isfinite(logp).all():
                raise ValueError(
                    f"the density of x_t is not finite at t = {t:g} (for this interpolant and "
                    "γ, x_t has no density there)"
                )
            density = np.exp(logp).reshape(n, n)
            if not density.max() > 0:
                raise ValueError(
                    f"the density of x_t underflows to 0 on the whole window at t = {t:g}: "
                    "x_t is (nearly) a point mass there, or lies outside the window"
                )
            v, shafts, scale = None, None, 1.0
            if field != "none":
                fn = f.velocity if field == "b" else f.score
                v = fn(self._arrows_t, t).to(torch.float64).numpy()
                if not np.isfinite(v).all():
                    raise ValueError(f"the field {field} is not finite at t = {t:g}")
                weight = np.exp(f.log_prob(self._arrows_t, t).to(torch.float64).numpy())
                shafts, scale = field_arrows(self.arrow_points, v, weight, self.arrow_spacing)
            samples = None
            if self.n_samples:
                gen = torch.Generator().manual_seed(self.seed)
                samples = f.sample(t, self.n_samples, gen).to(torch.float32).numpy()
        cell = (self.xs[1] - self.xs[0]) * (self.ys[1] - self.ys[0])
        return Picture(t, density, v, shafts, samples, scale, float(density.sum() * cell))

    def _kept(self, picture: Picture, field: str) -> Picture:
        """Remember a picture of the setting shown (see the module docstring); returns it."""
        self._pictures[(picture.t, field)] = picture
        return picture

    def _picture_of(self, t: Any, field: str) -> Picture:
        """The picture of the setting shown at time t with ``field`` (kept, or computed)."""
        if isinstance(t, numbers.Real) and not isinstance(t, bool):
            kept = self._pictures.get((float(t), field))
            if kept is not None:
                return kept
        return self._kept(self._pictured(self._config, t, field), field)

    # --- drawing ----------------------------------------------------------------------

    def _empty_figure(self, height: int) -> go.Figure:
        z = np.zeros((self.ys.shape[0], self.xs.shape[0]))
        heat = density_heatmap_trace(z, self.extent, self.extent, name="ρ_t")
        heat.update(colorbar=dict(title="ρ_t", thickness=12))
        arrows = quiver_trace(np.zeros((0, 2)), np.zeros((0, 2)), color=ARROW_COLOR)
        samples = points_trace(np.zeros((0, 2)), name="samples of x_t", color=SAMPLE_COLOR, size=3)
        layout = plane_layout(None, self.extent, self.extent, height=height)
        layout["margin"] = dict(l=40, r=20, t=30, b=40)
        return go.Figure(data=[heat, arrows, samples], layout=layout)

    def _draw(self, fig: go.Figure, pic: Picture) -> None:
        heat, arrows, samples = fig.data
        with fig.batch_update():
            heat.z = pic.density
            if pic.field is None:
                arrows.x, arrows.y = [], []
            else:
                a = quiver_trace(self.arrow_points, pic.field, color=ARROW_COLOR)
                arrows.x, arrows.y = a.x, a.y
            if pic.samples is not None and self._show_samples:
                samples.x, samples.y = pic.samples[:, 0], pic.samples[:, 1]
            else:
                samples.x, samples.y = [], []
            title = self._title()
            if fig.layout.title.text != title:  # unchanged by a time move: send nothing
                fig.layout.title = dict(text=title, x=0.02, font=dict(size=13), xanchor="left")

    def _title(self) -> str:
        c = self._config
        field = FIELD_NAMES[self._field]
        return (
            f"ρ_t of x_t, {html.escape(c.interpolant)} interpolant, γ = {html.escape(c.gamma)}"
            f"{f' (a = {c.a:g})' if c.gamma == 'sqrt' else ''}; arrows: {field}"
        )

    def _write_readout(self) -> None:
        pic, interp = self._picture, self._config.interp
        t = torch.tensor(pic.t, dtype=torch.float64)
        a, b, g = (float(v) for v in (interp.a(t), interp.b(t), interp.gamma.gamma(t)))
        text = (
            f"x<sub>t</sub> = {a:.3f} x₀ + {b:.3f} x₁ + {g:.3f} z &nbsp;|&nbsp; "
            f"mass on the grid {pic.mass:.3f}"
        )
        if pic.field is not None:
            text += (
                f" &nbsp;|&nbsp; arrow = {pic.scale:.3g} × {self._field} "
                "(long ones cut at one spacing)"
            )
        self.readout.value = text

    def _redraw(self) -> None:
        self._draw(self.figure, self._picture)
        self._write_readout()

    def _show(self, picture: Picture) -> None:
        self._picture = picture
        self._redraw()

    # --- setting state ----------------------------------------------------------------

    def set_time(self, t: float) -> bool:
        """Show time t in [0, 1] with the last valid setting; True on success, never raises."""
        with shown_errors(self.message, clear=False) as outcome:
            picture = self._picture_of(t, self._field)
        if not outcome.ok:
            return show_rejected(
                self.message, describe_error(outcome.error), "Showing the previous picture"
            )
        if not self._config_error:
            clear_message(self.message)
        self._show(picture)
        self._quietly(self.time_slider, picture.t)
        return True

    def _quietly(self, control: widgets.ValueWidget, value: Any) -> None:
        """Move a control to ``value`` without running its callback."""
        set_quietly(self, control, value, "_holding")

    def set_field(self, field: str) -> bool:
        """Show the field "b", "s" or "none"; True on success, never raises."""
        with shown_errors(self.message, clear=False) as outcome:
            if field not in FIELDS:
                raise ValueError(f"field must be one of {', '.join(FIELDS)}, got {field!r}")
            picture = self._picture_of(self.t, field)
        if not outcome.ok:
            return False
        self._field = field
        self._quietly(self.field_toggle, field)
        self._show(picture)
        return True

    def _on_samples(self, change: dict[str, Any]) -> None:
        self._show_samples = bool(change["new"])
        self._redraw()

    def _on_config(self, change: dict[str, Any]) -> None:
        if not self._holding:
            self.update_config()

    def update_config(self) -> bool:
        """Rebuild the fields from the menus and the box and redraw; True on success.

        A setting that is not valid shows a message naming it and keeps the last valid
        setting and picture (returns False); never raises.
        """
        with shown_errors(self.message) as outcome:
            config = self._configured(
                self.rho0_menu.value,
                self.rho1_menu.value,
                self.interpolant_menu.value,
                self.gamma_menu.value,
                self.a_box.value,
            )
            picture = self._pictured(config, self.t, self._field)
        if not outcome.ok:
            self._config_error = True
            c = self._config
            return show_rejected(
                self.message,
                describe_error(outcome.error),
                f"Showing the last valid setting ({c.interpolant}, γ {c.gamma}"
                f"{f', a = {c.a:g}' if c.gamma == 'sqrt' else ''})",
            )
        self._config_error = False
        self._config = config
        self._pictures = {}
        self._show(self._kept(picture, self._field))
        self._after_config()
        return True

    def _after_config(self) -> None:
        c = self._config
        self.info.value = message_html(c.info, "info") if c.info else ""
        self.rho0_menu.disabled = c.interp.rho0_constraint is not None
        self._write_readout()

    def set_config(
        self,
        rho0: str | None = None,
        rho1: str | None = None,
        interpolant: str | None = None,
        gamma: str | None = None,
        a: float | None = None,
    ) -> bool:
        """Set several choices, then rebuild once (what a reader does with the controls).

        Returns :meth:`update_config`'s result: a bad value gives a message and False.
        """
        with shown_errors(self.message) as outcome:
            with quietly(self, "_holding"):
                for menu, value, name in (
                    (self.rho0_menu, rho0, "rho0"),
                    (self.rho1_menu, rho1, "rho1"),
                    (self.interpolant_menu, interpolant, "interpolant"),
                    (self.gamma_menu, gamma, "gamma"),
                ):
                    if value is not None:
                        if value not in menu.options:
                            valid = ", ".join(menu.options)
                            raise ValueError(f"{name} must be one of {valid}, got {value!r}")
                        menu.value = value
                if a is not None:
                    self.a_box.value = float(a)
        if not outcome.ok:  # nothing was changed: the controls still hold a valid setting
            return False
        return self.update_config()
