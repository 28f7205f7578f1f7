"""Exact vs learned entropy production rate across a parameter sweep (v0 or packing fraction).

Card 12_active_matter, "Small reproduction": the learned EPR should track the exact
gamma v0^2 / (eps (A + gamma)) of the trapped AOUP across a v0 sweep. One
``go.FigureWidget`` shows the exact curve with its tolerance band, the learned values
(green inside the band, red outside), optional other curves, and a ring on the point the
slider picks; an optional second panel shows a histogram of per-v0 data (per-particle
EPR, say) on bins shared by all v0, so the panels are comparable from one v0 to the next.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pflow_explore.viz.arrays import as_numpy
from pflow_explore.viz.style import BLUE, GRAY, GREEN, ORANGE, PURPLE, RED, figure_layout, margins
from pflow_explore.widgets.controls import (
    checked_index,
    checked_number,
    send_values,
    set_quietly,
    shown,
)
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label, show_rejected, shown_errors

EXACT_COLOR = "#222222"
BAND_COLOR = "rgba(44, 160, 44, 0.15)"
WITHIN_COLOR = GREEN
OUTSIDE_COLOR = RED
UNDECIDED_COLOR = GRAY  # no exact value, or exact = 0 (relative error undefined)
EXTRA_COLORS = [BLUE, ORANGE, PURPLE, "#8c564b", "#e377c2"]
CURVE_POINTS = 200


def _vector(values: Any, name: str, m: int | None = None) -> np.ndarray:
    v = as_numpy(values, name)
    if v.ndim != 1 or (m is not None and v.shape[0] != m):
        want = "(m,)" if m is None else f"(m,) = ({m},), one per sweep value"
        raise ValueError(f"{name} must have shape {want}, got {tuple(v.shape)}")
    if not np.isfinite(v).all():
        raise ValueError(
            f"{name} contain NaN or infinite values at positions "
            f"{np.flatnonzero(~np.isfinite(v)).tolist()}"
        )
    return v


def evaluated(exact: Callable[[float], float], values: np.ndarray, label: str) -> np.ndarray:
    """exact(v) at every v of ``values`` (k,) as floats; ValueError naming the failing v."""
    out = np.empty(values.shape[0])
    for j, v in enumerate(values):
        try:
            out[j] = float(exact(float(v)))
        except Exception as err:  # the reader's function: name where it failed
            raise ValueError(f"exact({label} = {v:.4g}) failed: {err}") from err
        if not math.isfinite(out[j]):
            raise ValueError(f"exact({label} = {v:.4g}) is not finite: {out[j]}")
    return out


def relative_error(learned: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """(learned - exact) / |exact| per sweep value; NaN where exact = 0 (undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (learned - exact) / np.abs(exact)
    return np.where(exact != 0, rel, np.nan)


class EPRSweep(widgets.VBox):
    """Exact vs learned EPR over sweep values v0_values (m,), with a slider over the sweep.

    ``exact``: (m,) values, a function v0 -> EPR (drawn as a smooth curve and evaluated at
    the sweep values), or None (then no errors, grey points). ``learned``: (m,). ``extra``:
    {name: (m,)} other curves (another estimator, the g-part alone, ...). ``detail``: a
    sequence of m 1-D arrays (e.g. per-particle EPR at each v0), drawn as a histogram on
    bins shared by all v0 in a second panel. ``parameter_label`` names the swept parameter
    (``"phi"`` for a packing-fraction sweep).

    Controls: the sweep slider (a SelectionSlider, the first slider of the widget), which
    rings the picked point and shows exact, learned and the relative error
    (learned - exact) / |exact| in the readout; the tolerance in percent (FloatText, CSS
    class ``pflow-input``): learned points inside exact +- tolerance |exact| are green,
    outside red. Bad input shows a message and keeps the last good picture.

    Code-facing: ``set_index(i)``, ``set_v0(v)`` (raise ValueError off the sweep),
    ``set_tolerance(percent)`` and ``set_values(learned, exact=..., extra=..., detail=...)``
    (return False and show a message on bad input).
    """

    def __init__(
        self,
        v0_values: Any,
        exact: Any,
        learned: Any,
        extra: Mapping[str, Any] | None = None,
        detail: Sequence[Any] | None = None,
        parameter_label: str = "v0",
        quantity_label: str = "EPR",
        detail_label: str = "per-particle EPR",
        tolerance: float = 10.0,
        bins: int = 30,
        title: str | None = None,
        height: int = 420,
    ) -> None:
        self.v0 = _vector(v0_values, parameter_label)
        if self.v0.shape[0] < 1 or np.unique(self.v0).shape[0] != self.v0.shape[0]:
            raise ValueError(f"{parameter_label} values must be at least one, all distinct")
        self.parameter_label, self.quantity_label = str(parameter_label), str(quantity_label)
        self.detail_label = str(detail_label)
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
        self.bins = bins
        self._tolerance = self._checked_tolerance(tolerance)
        self._index = 0
        self._quiet = False
        self._set(*self._validated(learned, exact, extra, detail))

        self._has_detail = self._detail is not None
        if self._has_detail:
            fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1)
        else:
            fig = go.Figure()
        fig.update_layout(
            **figure_layout(
                title,
                height=height,
                margin=margins(50, 20, 50 if title else 30, 90),
                legend=dict(orientation="h", y=-0.25),
            )
        )
        cell = self._cell()
        fig.update_xaxes(title_text=self.parameter_label, **cell)
        fig.update_yaxes(title_text=self.quantity_label, **cell)
        if self._has_detail:
            fig.update_xaxes(title_text=self.detail_label, row=1, col=2)
            fig.update_yaxes(title_text="count", row=1, col=2)
        self._build_traces(fig)
        # The first picture goes into the plain Figure before it is wrapped: a page that
        # connects later (Voila) builds the figure from its state at construction.
        self._draw_curves(fig)
        self._draw_current(fig)
        self.figure = LiveFigure(fig)

        options = self._slider_options()
        self.slider = widgets.SelectionSlider(
            options=options,
            value=0,
            description=self.parameter_label,
            continuous_update=True,
            layout=widgets.Layout(width="420px"),
        )
        self.tolerance_box = widgets.FloatText(
            value=self._tolerance,
            description="tolerance %",
            step=1.0,
            style={"description_width": "80px"},
            layout=widgets.Layout(width="180px"),
        )
        self.tolerance_box.add_class("pflow-input")  # validated: the browser test types here
        self.readout = widgets.HTML()
        self.summary = widgets.HTML()
        self.message = message_label()
        self.slider.observe(self._on_slider, names="value")
        send_values(self, self.set_tolerance, self.tolerance_box)
        super().__init__(
            [
                self.figure,
                widgets.HBox([self.slider, self.tolerance_box]),
                self.readout,
                self.summary,
                self.message,
            ]
        )
        self._write_text()

    # --- data -------------------------------------------------------------------------

    def _validated(
        self, learned: Any, exact: Any, extra: Mapping[str, Any] | None, detail: Any
    ) -> tuple:
        m = self.v0.shape[0]
        learned_v = _vector(learned, "learned", m)
        curve = None
        if exact is None:
            exact_v = None
        elif callable(exact):
            exact_v = evaluated(exact, self.v0, self.parameter_label)
            grid = np.linspace(self.v0.min(), self.v0.max(), CURVE_POINTS)
            curve = (grid, evaluated(exact, grid, self.parameter_label))
        else:
            exact_v = _vector(exact, "exact", m)
        extra_v = {}
        for name, values in (extra or {}).items():
            extra_v[str(name)] = _vector(values, f"extra[{name!r}]", m)
        detail_v = None
        if detail is not None:
            if isinstance(detail, np.ndarray) and detail.ndim == 2:
                detail = list(detail)
            if len(detail) != m:
                raise ValueError(
                    f"detail must hold one 1-D array per {self.parameter_label} value "
                    f"({m}), got {len(detail)}"
                )
            detail_v = []
            for j, d in enumerate(detail):
                arr = as_numpy(d, f"detail[{j}]").ravel()
                if arr.size == 0 or not np.isfinite(arr).all():
                    raise ValueError(f"detail[{j}] must be a non-empty array of finite numbers")
                detail_v.append(arr)
        return learned_v, exact_v, curve, extra_v, detail_v

    def _set(
        self,
        learned: np.ndarray,
        exact: np.ndarray | None,
        curve: tuple[np.ndarray, np.ndarray] | None,
        extra: dict[str, np.ndarray],
        detail: list[np.ndarray] | None,
    ) -> None:
        self._learned, self._exact, self._curve = learned, exact, curve
        self._extra, self._detail = extra, detail
        if exact is not None:
            self._error = relative_error(learned, exact)
        else:
            self._error = np.full(learned.shape, np.nan)
        if detail is not None:
            every = np.concatenate(detail)
            lo, hi = float(every.min()), float(every.max())
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            self._edges = np.linspace(lo, hi, self.bins + 1)

    index = shown("_index", "The sweep index now picked.")
    tolerance = shown("_tolerance", "The tolerance in percent.")
    relative_errors = shown(
        "_error", "(learned - exact) / |exact| per sweep value (m,); NaN without an exact value."
    )

    def within_tolerance(self) -> np.ndarray:
        """(m,) bool: |relative error| <= tolerance / 100 (False where it is undefined)."""
        err = np.abs(self._error)
        return np.where(np.isnan(err), False, err <= self._tolerance / 100 + 1e-12)

    # --- figure -----------------------------------------------------------------------

    def _cell(self) -> dict[str, int]:
        return dict(row=1, col=1) if self._has_detail else {}

    def _build_traces(self, fig: go.Figure) -> None:
        cell = self._cell()
        band = dict(mode="lines", line=dict(width=0), hoverinfo="skip", showlegend=False)
        fig.add_trace(go.Scatter(name="band low", **band), **cell)
        fig.add_trace(
            go.Scatter(name="tolerance band", fill="tonexty", fillcolor=BAND_COLOR, **band),
            **cell,
        )
        fig.add_trace(
            go.Scatter(name="exact", mode="lines", line=dict(color=EXACT_COLOR, width=2)),
            **cell,
        )
        for j, name in enumerate(self._extra):
            fig.add_trace(
                go.Scatter(
                    name=name,
                    mode="lines+markers",
                    line=dict(color=EXTRA_COLORS[j % len(EXTRA_COLORS)], width=1.2, dash="dot"),
                    marker=dict(size=6),
                ),
                **cell,
            )
        fig.add_trace(
            go.Scatter(
                name="learned",
                mode="lines+markers",
                line=dict(color="rgba(120,120,120,0.5)", width=1),
                marker=dict(size=10, line=dict(color="white", width=1)),
            ),
            **cell,
        )
        fig.add_trace(
            go.Scatter(
                name="picked",
                mode="markers",
                marker=dict(size=20, color="rgba(0,0,0,0)", line=dict(color="black", width=2)),
                showlegend=False,
                hoverinfo="skip",
            ),
            **cell,
        )
        if self._has_detail:
            fig.add_trace(
                go.Bar(name=self.detail_label, marker_color="#1f77b4", showlegend=False),
                row=1,
                col=2,
            )
        self._n_extra = len(self._extra)

    def _traces(self, fig: go.Figure) -> dict[str, Any]:
        data = fig.data
        names = ["band low", "band high", "exact"]
        names += [f"extra {j}" for j in range(self._n_extra)] + ["learned", "picked"]
        traces = dict(zip(names, data, strict=False))
        if self._has_detail:
            traces["detail"] = data[-1]
        return traces

    def _exact_curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self._curve is not None:
            return self._curve
        if self._exact is None:
            return None
        order = np.argsort(self.v0)
        return self.v0[order], self._exact[order]

    def _point_colors(self) -> list[str]:
        inside = self.within_tolerance()
        return [
            UNDECIDED_COLOR if np.isnan(e) else (WITHIN_COLOR if ok else OUTSIDE_COLOR)
            for e, ok in zip(self._error, inside, strict=True)
        ]

    def _draw_curves(self, fig: go.Figure) -> None:
        """Everything that does not depend on the picked point: curves, band, colours."""
        t = self._traces(fig)
        curve = self._exact_curve()
        order = np.argsort(self.v0)
        if curve is None:
            for name in ("band low", "band high", "exact"):
                t[name].x, t[name].y = [], []
        else:
            grid, values = curve
            width = self._tolerance / 100 * np.abs(values)
            t["band low"].x, t["band low"].y = grid, values - width
            t["band high"].x, t["band high"].y = grid, values + width
            t["exact"].x, t["exact"].y = grid, values
        for j, values in enumerate(self._extra.values()):
            t[f"extra {j}"].x, t[f"extra {j}"].y = self.v0[order], values[order]
        learned = t["learned"]
        learned.x, learned.y = self.v0[order], self._learned[order]
        learned.marker.color = [self._point_colors()[j] for j in order]
        learned.customdata = 100 * self._error[order]
        learned.hovertemplate = (
            f"{self.parameter_label} = %{{x:.4g}}<br>learned = %{{y:.4g}}"
            "<br>relative error = %{customdata:.2f} %<extra></extra>"
        )

    def _draw_current(self, fig: go.Figure) -> None:
        """The ring on the picked point and the histogram of its detail."""
        t = self._traces(fig)
        i = self._index
        t["picked"].x, t["picked"].y = [self.v0[i]], [self._learned[i]]
        if self._has_detail:
            counts, edges = np.histogram(self._detail[i], bins=self._edges)
            t["detail"].x = 0.5 * (edges[:-1] + edges[1:])
            t["detail"].y = counts
            t["detail"].width = float(edges[1] - edges[0])

    def _slider_options(self) -> list[tuple[str, int]]:
        """Labels with just enough digits to tell all sweep values apart."""
        for digits in range(3, 12):
            labels = [f"{v:.{digits}g}" for v in self.v0]
            if len(set(labels)) == len(labels):
                break
        return [(label, j) for j, label in enumerate(labels)]

    def _write_text(self) -> None:
        i, p, q = self._index, self.parameter_label, self.quantity_label
        text = f"{p} = {self.v0[i]:.4g}: learned {q} = {self._learned[i]:.4g}"
        if self._exact is not None:
            text += f", exact {q} = {self._exact[i]:.4g}"
            err = self._error[i]
            if np.isnan(err):
                text += ", relative error undefined (exact = 0)"
            else:
                verdict = "within" if self.within_tolerance()[i] else "outside"
                text += (
                    f", relative error = {100 * err:+.2f} % "
                    f"({verdict} the {self._tolerance:g} % tolerance)"
                )
        if self._has_detail:
            d = self._detail[i]
            text += f" &nbsp;|&nbsp; {self.detail_label}: mean {d.mean():.4g} over {d.size}"
        self.readout.value = text
        if self._exact is None:
            self.summary.value = "No exact values: relative errors are not defined."
            return
        defined = ~np.isnan(self._error)
        if not defined.any():
            self.summary.value = "Every exact value is 0: relative errors are not defined."
            return
        worst = int(np.nanargmax(np.abs(self._error)))
        self.summary.value = (
            f"{int(self.within_tolerance().sum())} of {int(defined.sum())} learned values within "
            f"{self._tolerance:g} %; largest |relative error| = "
            f"{100 * abs(self._error[worst]):.2f} % at {p} = {self.v0[worst]:.4g}"
        )

    # --- setters ----------------------------------------------------------------------

    def set_index(self, i: int) -> None:
        """Pick sweep value i in [0, m-1]: ring it, show its numbers and its histogram."""
        self._index = checked_index(i, self.v0.shape[0] - 1, "index")
        set_quietly(self, self.slider, self._index)  # the control first, then the picture
        with self.figure.batch_update():
            self._draw_current(self.figure)
        self._write_text()

    def set_v0(self, v0: float) -> None:
        """Pick the sweep value equal (to 1e-9 relative) to ``v0``; ValueError if none is."""
        hits = np.flatnonzero(np.isclose(self.v0, float(v0), rtol=1e-9, atol=1e-12))
        if hits.size == 0:
            raise ValueError(
                f"{self.parameter_label} = {v0!r} is not in the sweep; "
                f"choose one of {', '.join(f'{v:.4g}' for v in self.v0)}"
            )
        self.set_index(int(hits[0]))

    def _on_slider(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        with shown_errors(self.message, clear=False):
            self.set_index(change["new"])

    @staticmethod
    def _checked_tolerance(percent: Any) -> float:
        return checked_number(percent, "tolerance", 0.0, what="a percentage")

    def set_tolerance(self, percent: float) -> bool:
        """Colour learned points by |relative error| <= percent / 100; False on bad input."""
        with shown_errors(self.message) as outcome:
            self._tolerance = self._checked_tolerance(percent)
        if not outcome.ok:
            return show_rejected(
                self.message,
                outcome.error,
                f"Keeping the previous tolerance ({self._tolerance:g} %)",
            )
        set_quietly(self, self.tolerance_box, self._tolerance)  # the control first
        with self.figure.batch_update():
            self._draw_curves(self.figure)
        self._write_text()
        return True

    def set_values(
        self,
        learned: Any,
        exact: Any = None,
        extra: Mapping[str, Any] | None = None,
        detail: Sequence[Any] | None = None,
    ) -> bool:
        """Swap in new learned values (m,) (and exact / extra / detail) on the same sweep.

        ``exact=None`` keeps the current exact values; ``extra`` must name the same curves
        as at construction, and ``detail`` is only accepted when the widget was built with
        one. Returns False and shows a message on bad input, keeping the last good picture.
        """
        with shown_errors(self.message) as outcome:
            if extra is not None and list(map(str, extra)) != list(self._extra):
                raise ValueError(
                    f"extra must name the curves {list(self._extra)}, got {list(extra)}"
                )
            if detail is not None and not self._has_detail:
                raise ValueError("detail was not given at construction: there is no panel for it")
            exact_arg = exact
            if exact is None and self._exact is not None:
                exact_arg = self._exact
            parts = self._validated(
                learned,
                exact_arg,
                self._extra if extra is None else extra,
                self._detail if detail is None else detail,
            )
            if exact is None and self._curve is not None:
                parts = (parts[0], parts[1], self._curve, *parts[3:])
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "Showing the previous values")
        self._set(*parts)
        with self.figure.batch_update():
            self._draw_curves(self.figure)
            self._draw_current(self.figure)
        self._write_text()
        return True
