"""Step through 2D trajectories x_0, ..., x_T of n particles (an ODE/SDE solution).

One ``go.FigureWidget`` holds, bottom to top: optional background traces (a density, the
data), faint full paths of up to ``n_lines`` particles, the same paths traced up to the
current step, and the particles at the current step. Moving the slider (or Play, or
Prev/Next) rewrites the data of the last three traces in place inside ``batch_update``;
the figure itself is built once (the first FigureWidget costs seconds, an update ms).

The browser redraws the whole figure on every move, about 50 us a marker and a few us a
line point (docs/architecture.md), so a move draws at most ``max_markers`` markers and
``max_line_points`` line points (:mod:`pflow_explore.widgets.redraw_budget`, the same rule
for every explorer a slider moves): an evenly spaced, deterministic subset of the
particles, and fewer paths (never fewer time points). Every number shown (the readout) uses
all n particles; the readout says what is drawn when it is a subset.

Time convention: the caller's (the solver's grid is stepped through as given).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.basedatatypes import BaseTraceType

from pflow_explore.viz.arrays import as_numpy, padded_range
from pflow_explore.viz.points import SAMPLE_COLOR, plane_layout, points_trace
from pflow_explore.viz.style import line_style
from pflow_explore.widgets.controls import shown
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

FULL_PATH_COLOR = "rgba(90, 90, 90, 0.18)"
TRACED_PATH_COLOR = "rgba(31, 119, 180, 0.55)"
BACKGROUND_POINT_COLOR = "rgba(150, 150, 150, 0.5)"


def validated_trajectories(trajectories: Any, times: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert trajectories (T+1, n, 2) and times (T+1,); ValueError if unusable.

    Returns float32 trajectories (half the bytes sent to the browser, ample for a plot)
    and float64 times.
    """
    x = as_numpy(trajectories, "trajectories", np.float32)
    if x.ndim != 3 or x.shape[2] != 2:
        raise ValueError(
            f"trajectories must have shape (T+1, n, 2), time first, got {tuple(x.shape)}"
        )
    if x.shape[0] < 2:
        raise ValueError(f"trajectories need at least 2 time points (T >= 1), got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError("trajectories must hold at least one path (n >= 1), got n = 0")
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argmax(bad.any(axis=(1, 2))))
        raise ValueError(
            f"trajectories contain NaN or infinite values ({int(bad.sum())} of {bad.size} "
            f"coordinates, from step {first}): the solver probably diverged; "
            "try more steps or a smaller step size"
        )
    t = as_numpy(times, "times")
    if t.shape != (x.shape[0],):
        raise ValueError(
            f"times must have shape (T+1,) = ({x.shape[0]},), one time per step of "
            f"trajectories {tuple(x.shape)}, got {tuple(t.shape)}"
        )
    if not np.isfinite(t).all():
        raise ValueError("times contain NaN or infinite values")
    return x, t


def _background_traces(background: Any, n: int, cap: int) -> tuple[list[dict[str, Any]], int]:
    """Traces (as dicts, so they can join a new figure) from a figure, trace(s) or points,
    and how many background markers they draw: points (k, 2) share the marker ``cap`` with
    the n particles (each set cut in proportion, evenly spaced); traces are drawn as given
    (and counted as none)."""
    if background is None:
        return [], 0
    if isinstance(background, go.Figure | go.FigureWidget):
        return [t.to_plotly_json() for t in background.data], 0
    if isinstance(background, BaseTraceType):
        return [background.to_plotly_json()], 0
    if isinstance(background, Sequence) and all(isinstance(t, BaseTraceType) for t in background):
        return [t.to_plotly_json() for t in background], 0
    try:
        trace = points_trace(background, name="background", color=BACKGROUND_POINT_COLOR, size=3)
    except ValueError as err:
        raise ValueError(
            "background must be None, a go.Figure, a trace, a list of traces or points (k, 2)"
        ) from err
    k = len(trace.x)
    keep = evenly_spaced(k, marker_shares([k, n], cap)[0])
    trace.update(x=np.asarray(trace.x)[keep], y=np.asarray(trace.y)[keep])
    return [trace.to_plotly_json()], len(keep)


class TrajectoryExplorer(StepControls, widgets.VBox):
    """Scrub, play and step through trajectories (T+1, n, 2) at times (T+1,).

    Controls: Play (linked to the slider in the browser, so playing needs no round trip),
    Prev/Next, a step slider with the time t beside it; below, a readout of the mean
    displacement (1/n) sum_j |x_i^j - x_0^j| and the mean path length
    (1/n) sum_j sum_{k<=i} |x_k^j - x_{k-1}^j| at the current step i, and a message line.

    ``set_trajectories`` swaps the data (after a parameter change) in the same figure; bad
    data shows a message and keeps the last good picture. ``background`` is drawn beneath:
    a go.Figure (its traces), a trace, a list of traces (drawn as given), or points (k, 2).

    A move draws at most ``max_markers`` markers (the particles and background points
    share them) and ``max_line_points`` line points (at most that many // (2 (T+2)) paths,
    and at most ``n_lines``), evenly spaced subsets; the readout uses all n particles and
    says what is drawn ("drawing 400 of 1,024 particles ...").
    """

    def __init__(
        self,
        trajectories: Any,
        times: Any,
        background: Any = None,
        title: str | None = None,
        n_lines: int = 200,
        xlim: tuple[float, float] | None = None,
        ylim: tuple[float, float] | None = None,
        interval_ms: int = 100,
        marker_size: float = 4,
        max_markers: int = MAX_DRAWN_MARKERS,
        max_line_points: int = MAX_DRAWN_LINE_POINTS,
    ) -> None:
        if int(n_lines) != n_lines or n_lines < 0:
            raise ValueError(f"n_lines (paths drawn) must be an integer >= 0, got {n_lines!r}")
        self.n_lines = int(n_lines)
        self.max_markers = checked_cap(max_markers, "max_markers")
        self.max_line_points = checked_cap(max_line_points, "max_line_points")
        self._fixed_limits = (xlim, ylim)
        self._x, self._t = validated_trajectories(trajectories, times)
        backdrop, self._background_markers = _background_traces(
            background, self._x.shape[1], self.max_markers
        )
        self._prepare()
        self._step = 0

        paths = [
            dict(type="scatter", name=name, hoverinfo="skip", **line_style(color, width))
            for name, color, width in [
                ("paths", FULL_PATH_COLOR, 1),
                ("so far", TRACED_PATH_COLOR, 1.2),
            ]
        ]
        first = self._x[0, self._drawn]
        current = points_trace(first, name="x_t", color=SAMPLE_COLOR, size=marker_size)
        data = backdrop + paths + [current.to_plotly_json()]
        layout = plane_layout(title, *self._limits(), height=480)
        # Draw the first picture into a plain Figure and wrap it afterwards: a page that
        # connects later (Voila, a preheated kernel) builds the figure from its state at
        # construction; updates sent before it connected are lost.
        draft = go.Figure(data=data, layout=layout)
        flat = self._lines.reshape(-1, 2)
        draft.data[-3].update(x=flat[:, 0], y=flat[:, 1])
        traced = np.concatenate([self._lines[:, :1], self._gap], axis=1).reshape(-1, 2)
        draft.data[-2].update(x=traced[:, 0], y=traced[:, 1])
        self.figure = LiveFigure(draft)
        self._full_paths, self._traced_paths, self._current = self.figure.data[-3:]

        controls = self.step_row(interval_ms, time_label=widgets.Label)
        self.readout = widgets.HTML()
        self.message = message_label()
        super().__init__([self.figure, controls, self.readout, self.message])
        self._draw_paths()
        self.step_to(0)

    # --- data -------------------------------------------------------------------------

    @property
    def n_steps(self) -> int:
        """T: the last step index (trajectories hold T+1 time points)."""
        return self._x.shape[0] - 1

    trajectories = shown("_x", "The trajectories (T+1, n, 2) now shown (float32).")
    times = shown("_t", "The times (T+1,) now shown.")

    def _prepare(self) -> None:
        """Precompute what every step needs: the drawn subsets and the path statistics."""
        n = self._x.shape[1]
        # Evenly spaced particles, not random ones: the same data always draws the same.
        self._drawn = evenly_spaced(n, max(1, self.max_markers - self._background_markers))
        # the paths: of drawn particles, two traces of T+2 points each (NaN break) at most
        per_path = 2 * (self._x.shape[0] + 1)
        m = min(self.n_lines, len(self._drawn), max(1, self.max_line_points // per_path))
        chosen = self._drawn[evenly_spaced(len(self._drawn), m)]
        paths = [(len(chosen), n, "paths")] if len(chosen) else []
        self._note = drawing_note((len(self._drawn), n, "particles"), *paths)
        lines = np.full((len(chosen), self._x.shape[0] + 1, 2), np.nan, dtype=np.float32)
        lines[:, :-1] = np.swapaxes(self._x[:, chosen], 0, 1)
        self._lines = lines  # (m, T+2, 2), the last point a NaN break
        self._gap = np.full((len(chosen), 1, 2), np.nan, dtype=np.float32)
        seg = np.linalg.norm(np.diff(self._x.astype(np.float64), axis=0), axis=-1)  # (T, n)
        self._path_length = np.concatenate([[0.0], np.cumsum(seg.mean(axis=1))])  # (T+1,)

    def _limits(self) -> tuple[tuple[float, float], tuple[float, float]]:
        xlim, ylim = self._fixed_limits
        return (
            tuple(xlim) if xlim else padded_range(self._x[..., 0]),
            tuple(ylim) if ylim else padded_range(self._x[..., 1]),
        )

    def set_trajectories(self, trajectories: Any, times: Any) -> bool:
        """Show new trajectories (T+1, n, 2) at times (T+1,) in the same figure.

        Returns True on success. Bad input (wrong shapes, NaN, mismatched times) shows a
        message under the controls, keeps the last good picture and returns False: it never
        raises, so a parameter callback can call it directly.
        """
        with shown_errors(self.message) as outcome:
            x, t = validated_trajectories(trajectories, times)
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "Showing the previous trajectories")
        self._x, self._t = x, t
        self._prepare()
        self._step = min(self._step, self.n_steps)
        self._fit_step_range()
        xlim, ylim = self._limits()
        with self.figure.batch_update():
            self.figure.layout.xaxis.range = xlim
            self.figure.layout.yaxis.range = ylim
            self._draw_paths()
        self.step_to(self._step)
        return True

    # --- drawing ----------------------------------------------------------------------

    def _draw_paths(self) -> None:
        flat = self._lines.reshape(-1, 2)
        with self.figure.batch_update():
            self._full_paths.x = flat[:, 0]
            self._full_paths.y = flat[:, 1]

    def _show_step(self, i: int) -> None:
        """Step i in [0, T] (``step_to``): particles at x_i, paths traced up to x_i, readout
        at t_i. Only trace data change (in place, one batched message).
        """
        now = self._x[i]
        traced = np.concatenate([self._lines[:, : i + 1], self._gap], axis=1).reshape(-1, 2)
        with self.figure.batch_update():
            self._current.x = now[self._drawn, 0]
            self._current.y = now[self._drawn, 1]
            self._traced_paths.x = traced[:, 0]
            self._traced_paths.y = traced[:, 1]
        displacement = float(np.linalg.norm(now - self._x[0], axis=-1).mean())
        self.time_label.value = f"t = {self._t[i]:.3f}"
        self.readout.value = (
            f"step {i} of {self.n_steps}, t = {self._t[i]:.3f}, n = {now.shape[0]} &nbsp;|&nbsp; "
            f"mean distance from the start |x(t) &minus; x(t<sub>0</sub>)| = {displacement:.3f}"
            f" &nbsp;|&nbsp; mean path length = {self._path_length[i]:.3f}"
            + (f" &nbsp;|&nbsp; {self._note}" if self._note else "")
        )
