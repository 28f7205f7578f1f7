"""Chapter 07's explorer: how many steps, and what each gradient route costs and gets right.

:class:`AdjointExplorer` shows the measured peak memory and CPU time of one gradient against
the number of steps (naive backprop, the hand adjoint, torchdiffeq's odeint_adjoint; the
chapter's :func:`~pflow_explore.chapters.adjoint.memory` results, a dotted marker at the
chosen steps, the fitted line read off there), and the relative error of dL/dx_T against
the closed form on Gaussian data at the chosen number of steps for each route (a star on
each curve): computed when first asked for, or read from a chapter's store (``store``).

Time convention: diffusion (t = 0 data); the flows run in rho = sigma / alpha from rho_T to 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pflow_explore import adjoint as ad
from pflow_explore.experiment import stored_numbers
from pflow_explore.scale import single_threaded
from pflow_explore.viz.arrays import plain_floats
from pflow_explore.viz.style import BLUE, GREEN, RED, TEMPLATE
from pflow_explore.widgets.controls import checked_index, put_back, send_values, set_quietly
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label, shown_errors

COLORS = {"naive": RED, "adjoint": BLUE, "torchdiffeq": GREEN}
MAX_STEPS = 400
# the routes whose error is computed live: label -> (route, method)
LIVE = {
    "naive (heun)": ("naive", "heun"),
    "adjoint (heun)": ("adjoint", "heun"),
    "torchdiffeq (rk4)": ("torchdiffeq", "rk4"),
}
LIVE_COLORS = {"naive (heun)": RED, "adjoint (heun)": BLUE, "torchdiffeq (rk4)": GREEN}
ERROR_STEPS = (4, 8, 16, 32, 64)  # the dotted error curves
STORE_VERSION = 1  # of the stored errors: bump when a gradient route changes


def checked_steps(n: Any) -> int:
    """n as an int in [2, MAX_STEPS]; ValueError otherwise."""
    try:
        return checked_index(n, MAX_STEPS, "steps") if n >= 2 else _too_few(n)
    except (TypeError, ValueError):
        raise ValueError(
            f"steps must be a whole number between 2 and {MAX_STEPS}, got {n!r}"
        ) from None


def _too_few(n: Any) -> int:
    raise ValueError(n)


class AdjointExplorer(widgets.VBox):
    """steps: the measured step counts; peak, cpu: route -> values per step count (MiB, s);
    slopes: route -> (MiB per step, MiB at 0); problem: a Gaussian problem with a closed
    form (:func:`adjoint.gaussian_problem`). Controls: a steps slider over ``steps``
    and a box (CSS class ``pflow-input``: any whole number 2..400); bad input keeps the
    picture and says why. store: a chapter's cache folder (e.g. "adjoint"), where the errors
    at the slider's steps and on the dotted curves are kept (``experiment.stored_numbers``,
    keyed by a digest of the problem): a dashboard opened again draws its first picture
    without computing a gradient (27 of them, 2-3 s on a laptop). Any other number of steps
    is computed when asked for."""

    def __init__(
        self,
        steps: Sequence[int],
        peak: Mapping[str, Sequence[float]],
        cpu: Mapping[str, Sequence[float]],
        slopes: Mapping[str, tuple[float, float]],
        problem: ad.GaussianProblem,
        error_steps: Sequence[int] = ERROR_STEPS,
        store: str | None = None,
    ) -> None:
        self.steps_grid, self.slopes, self.problem = [int(n) for n in steps], dict(slopes), problem
        self.error_steps = sorted({int(n) for n in error_steps})
        self._errors: dict[tuple[str, int], float] = {}
        if store is not None:
            self._stored_errors(store)
        self._quiet = False
        self.n = self.steps_grid[(len(self.steps_grid) - 1) // 2]  # below the last: can move right
        fig = make_subplots(
            1,
            3,
            subplot_titles=("peak MiB", "CPU s", "dL/dx_T relative error"),
            horizontal_spacing=0.08,
        )
        for r in peak:
            for col, ys in ((1, peak[r]), (2, cpu[r])):
                fig.add_trace(
                    go.Scatter(
                        x=self.steps_grid,
                        y=plain_floats(ys),
                        name=r,
                        legendgroup=r,
                        showlegend=col == 1,
                        mode="lines+markers",
                        line=dict(color=COLORS.get(r, BLUE)),
                    ),
                    1,
                    col,
                )
        for label in LIVE:
            ys = [self.error(label, n) for n in self.error_steps]
            fig.add_trace(
                go.Scatter(
                    x=self.error_steps,
                    y=plain_floats(ys),
                    name=label,
                    mode="lines",
                    line=dict(color=LIVE_COLORS[label], dash="dot"),
                ),
                1,
                3,
            )
        self._n_fixed = len(fig.data)
        fig.add_trace(
            go.Scatter(
                name="chosen steps",
                mode="lines",
                line=dict(color="#444", dash="dot"),
                showlegend=False,
            ),
            1,
            1,
        )
        fig.add_trace(
            go.Scatter(mode="lines", line=dict(color="#444", dash="dot"), showlegend=False), 1, 2
        )
        fig.add_trace(
            go.Scatter(
                name="now",
                mode="markers",
                showlegend=False,
                marker=dict(size=12, symbol="star", color=list(LIVE_COLORS.values())),
            ),
            1,
            3,
        )
        fig.update_xaxes(type="log", title_text="steps")
        fig.update_yaxes(type="log", row=1, col=3)
        fig.update_layout(
            template=TEMPLATE, height=420, width=1100, legend=dict(orientation="h", y=-0.25)
        )
        self.figure: go.Figure = fig  # plain until the first picture is in it (below)
        self.steps_slider = widgets.SelectionSlider(
            options=self.steps_grid, value=self.n, description="steps"
        )
        self.steps_box = widgets.IntText(
            value=self.n, description="steps =", layout={"width": "180px"}
        )
        self.steps_box.add_class("pflow-input")  # validated: the browser test types -1 here
        self.message, self.readout = message_label(), widgets.HTML()
        self._peak_top = max(max(v) for v in peak.values())
        self._cpu_top = max(max(v) for v in cpu.values())
        send_values(self, self.set_steps, self.steps_slider, self.steps_box)
        self.set_steps(self.n)
        # the slider's neighbours of the first value too: a first move either way answers at
        # once instead of after three gradients (0.3-0.6 s on a laptop that draws the page)
        i = self.steps_grid.index(self.n)
        for n in self.steps_grid[max(0, i - 1) : i + 2]:
            for label in LIVE:
                self.error(label, n)
        self.figure = LiveFigure(fig)
        super().__init__(
            [
                widgets.HBox([self.steps_slider, self.steps_box]),
                self.message,
                self.figure,
                self.readout,
            ]
        )

    def _stored_errors(self, chapter: str) -> None:
        steps = sorted({*self.steps_grid, *self.error_steps})
        p = self.problem
        inputs = {**p.flow.state_dict(), "x_T": p.x_T, "exact_x_T": p.exact_x_T}
        routes = {label: list(r) for label, r in LIVE.items()}
        key = dict(path=type(p.flow.path).__name__, rho_T=p.rho_T, routes=routes, steps=steps)
        compute = lambda: {label: [self.error(label, n) for n in steps] for label in LIVE}
        table = stored_numbers(chapter, "explorer-errors", inputs, key, compute, STORE_VERSION)
        for label, row in table.items():
            self._errors.update(((label, n), e) for n, e in zip(steps, row, strict=True))

    def error(self, label: str, n: int) -> float:
        """Relative error of dL/dx_T by route ``label`` with ``n`` steps (computed once)."""
        if (label, n) not in self._errors:
            with single_threaded():
                self._errors[label, n] = ad.relative_error(self.problem, *LIVE[label], n)
        return self._errors[label, n]

    def set_steps(self, n: Any) -> bool:
        """Move the marker to ``n`` steps (a whole number 2..400) and compute the errors
        there; False and a message otherwise."""
        with shown_errors(self.message) as outcome:
            n = checked_steps(n)
            errs = [self.error(label, n) for label in LIVE]
        if not outcome.ok:
            return put_back(
                self, self.steps_box, self.n, outcome.error, "Showing the previous steps"
            )
        self.n = n
        if n in self.steps_grid:  # the controls first, then the picture
            set_quietly(self, self.steps_slider, n)
        set_quietly(self, self.steps_box, n)
        data, k = self.figure.data, self._n_fixed
        with self.figure.batch_update():
            data[k].x, data[k].y = [n, n], [0, self._peak_top]
            data[k + 1].x, data[k + 1].y = [n, n], [0, self._cpu_top]
            data[k + 2].x, data[k + 2].y = [n] * len(errs), plain_floats(errs)
        mem = ", ".join(f"{r} {b + a * n:.1f}" for r, (a, b) in self.slopes.items())
        err = ", ".join(f"{label} {e:.2e}" for label, e in zip(LIVE, errs, strict=True))
        self.readout.value = (
            f"<b>{n} steps</b>: peak MiB from the fitted lines: {mem}<br>"
            f"dL/dx_T relative error against the closed form: {err}"
        )
        return True
