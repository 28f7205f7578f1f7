"""Rectified flow round by round: Euler paths, their crossings and one-step quality (docs/papers.md
§03).

The same starts z0 (n, 2) are pushed through each round's velocity field v(x, t) (1-RF,
2-RF, ...; t = 0 noise, t = 1 data) with the chosen number of Euler steps, or through a
one-step map z0 -> z1 (a distilled model). The figure shows the paths of a subset of the
starts (red where two of them cross), the end points, and the target samples; the readout
gives, per round:

- S: the straightness (docs/papers.md) of the round's flow, measured on a fine 64-step
  Euler reference by :func:`pflow_explore.trajectories.straightness` (one value per
  round, independent of the chosen steps: it says how many steps the round needs);
- crossings: pairs of shown paths whose drawn polylines cross in the plane
  (:func:`pflow_explore.trajectories.crossings`; ``same_step=True`` counts only segments
  of the same step). An ODE forbids two paths meeting at the same time, not crossing
  at different times: the exact Gaussian 1-RF paths do cross in the plane (measured: 107
  of the 2016 pairs of 64 paths, mu = (3, 1), sigma = 0.5, 8 steps), the exact 2-RF paths
  (straight segments on rays from one point outside them) never do;
- ED: the energy distance (:func:`pflow_explore.metrics.energy_distance`) of the n end
  points to the target, and the mean distance of each end point to the fine reference's.

Paths are cached per (round, steps): moving back to a setting redraws without computing.

A move redraws the whole figure in the browser, so it draws at most ``max_markers``
(:data:`~pflow_explore.widgets.redraw_budget.MAX_DRAWN_MARKERS`, 400) markers and
``max_line_points`` (4,000) line points: at most a quarter of the markers and
max_line_points // (steps + 2) of the shown paths (evenly spaced among them, whole paths),
and evenly spaced subsets of the end points and the target sharing the other markers in
proportion. Every number (S, crossings among all shown paths, energy distance and end-point
error of all n) uses all samples; the readout says what is drawn when it is a subset.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor

from pflow_explore.metrics import energy_distance
from pflow_explore.scale import single_threaded
from pflow_explore.trajectories import crossings, straightness
from pflow_explore.viz.arrays import as_numpy, padded_range, polylines
from pflow_explore.viz.points import plane_layout
from pflow_explore.viz.style import ORANGE, line_style, marker_style
from pflow_explore.widgets.controls import send_values
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

F64 = torch.float64
VelocityField = Callable[[Tensor, float], Tensor]
OneStepMap = Callable[[Tensor], Tensor]

PATH_COLOR = "rgba(31, 119, 180, 0.45)"
CROSSING_COLOR = "rgba(214, 39, 40, 0.85)"
TARGET_COLOR = "rgba(150, 150, 150, 0.55)"
END_COLOR = ORANGE
START_COLOR = "rgba(40, 40, 40, 0.7)"
REFERENCE_STEPS = 64


@dataclass(frozen=True)
class ReflowState:
    """What one (round, steps, paths shown) setting shows.

    trajectory: (T + 1, n, 2) float64 Euler path of every start (T = 1 for a one-step map);
    shown: (k,) indices of the drawn paths; pairs: (c, 2) crossing pairs as indices into z0;
    straightness: S of the round's 64-step reference (None for a one-step map: one segment
    is straight by construction); energy: energy distance of the end points to the target
    (None without a target); endpoint_error: mean |Z_T - Z_ref| over the n paths (None for
    a one-step map).
    """

    round: str
    steps: int
    trajectory: Tensor
    shown: np.ndarray
    pairs: np.ndarray
    straightness: float | None
    energy: float | None
    endpoint_error: float | None

    @property
    def crossing_count(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def end_points(self) -> Tensor:
        return self.trajectory[-1]


def euler_paths(v: VelocityField, z0: Tensor, steps: int) -> Tensor:
    """Euler's method for dZ/dt = v(Z, t) from t = 0 to 1 in ``steps`` even steps.

    Z_{k+1} = Z_k + v(Z_k, k / steps) / steps; z0: (n, d) -> (steps + 1, n, d) float64.
    v is called with a float t; its output (n, d) must be finite.
    """
    states = [z0]
    z, dt = z0, 1.0 / steps
    for k in range(steps):
        velocity = torch.as_tensor(v(z, k * dt)).to(F64)
        if velocity.shape != z.shape:
            raise ValueError(f"the field returned shape {tuple(velocity.shape)}, not {z.shape}")
        z = z + dt * velocity
        if not torch.isfinite(z).all():
            raise ValueError(f"the Euler path diverged (NaN or inf) at step {k + 1} of {steps}")
        states.append(z)
    return torch.stack(states)


def _points(value: Any, name: str) -> Tensor:
    x = torch.as_tensor(as_numpy(value, name), dtype=F64)
    if x.dim() != 2 or x.shape[1] != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n, 2) with n >= 1, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def step_counts(values: Sequence[int], name: str = "steps_options") -> tuple[int, ...]:
    """Distinct integers >= 1, sorted: the step counts a slider offers; ValueError if not."""
    ok = len(values) > 0 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in values
    )
    if not ok:
        raise ValueError(f"{name} must be a non-empty list of integers >= 1, got {values!r}")
    return tuple(sorted({int(v) for v in values}))


def _shown_count(value: Any, n: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or int(value) != value
        or not 1 <= value <= n
    ):
        raise ValueError(f"paths shown must be an integer in [1, {n}], got {value!r}")
    return int(value)


class ReflowExplorer(widgets.VBox):
    """Compare rectified-flow rounds: Euler paths from the same z0, crossings, one-step quality.

    fields: label -> velocity v(x (n, 2), t float) -> (n, 2), e.g. {"1-RF": ..., "2-RF": ...};
    one_step: label -> map z0 (n, 2) -> z1 (n, 2) (distilled models), drawn as straight
    segments whatever the steps; z0: (n, 2) starts; target: (m, 2) data samples or None;
    steps_options: the Euler step counts offered (integers >= 1); n_shown: how many paths are
    shown (a random subset of z0 fixed by ``seed``; their crossings are counted);
    reference_steps: the Euler steps of the reference that S and the end-point error use;
    same_step: count crossings of same-step segments only (default: anywhere in the plane);
    max_markers, max_line_points: the most markers and line points a move draws (evenly
    spaced subsets of the shown paths, the end points and the target; module docstring).

    Children, top to bottom: the steps slider (the widget's first slider), the round buttons,
    "highlight crossings", the "paths shown" box (CSS class ``pflow-input``), the message
    line, the figure (``.figure``, a FigureWidget) and the readout. Code drives it with
    :meth:`set_steps`, :meth:`set_round`, :meth:`set_n_shown`, :meth:`set_highlight`; bad
    values show a message and keep the last good picture (they never raise).
    """

    def __init__(
        self,
        fields: Mapping[str, VelocityField] | None,
        z0: Any,
        target: Any = None,
        one_step: Mapping[str, OneStepMap] | None = None,
        steps_options: Sequence[int] = (1, 2, 4, 8, 16, 64),
        n_shown: int = 64,
        seed: int = 0,
        reference_steps: int = REFERENCE_STEPS,
        same_step: bool = False,
        title: str | None = None,
        max_markers: int = MAX_DRAWN_MARKERS,
        max_line_points: int = MAX_DRAWN_LINE_POINTS,
    ) -> None:
        fields, one_step = dict(fields or {}), dict(one_step or {})
        if not fields and not one_step:
            raise ValueError("give at least one velocity field (fields) or one-step map")
        both = set(fields) & set(one_step)
        if both:
            raise ValueError(f"labels used twice (fields and one_step): {sorted(both)}")
        for label, fn in {**fields, **one_step}.items():
            if not callable(fn):
                raise ValueError(f"{label!r} must be callable, got {type(fn).__name__}")
        options = step_counts(steps_options, "steps_options")
        if int(reference_steps) != reference_steps or reference_steps < 1:
            raise ValueError(f"reference_steps must be an integer >= 1, got {reference_steps!r}")
        self.fields, self.one_step = fields, one_step
        self.steps_options = options
        self.reference_steps = int(reference_steps)
        self.same_step = bool(same_step)
        self.max_markers = checked_cap(max_markers, "max_markers")
        self.max_line_points = checked_cap(max_line_points, "max_line_points")
        self.z0 = _points(z0, "z0")
        self.target = None if target is None else _points(target, "target")
        n = self.z0.shape[0]
        # drawn subsets, fixed for the data: starts of at most a quarter of the markers, the
        # end points and the target sharing the rest in proportion
        m = 0 if self.target is None else self.target.shape[0]
        ends, targets = marker_shares([n, m], self.max_markers - self.max_markers // 4)
        self._drawn_ends, self._drawn_target = evenly_spaced(n, ends), evenly_spaced(m, targets)
        g = torch.Generator().manual_seed(int(seed))
        self._order = torch.randperm(n, generator=g).numpy()  # shown paths: a prefix of it
        self._paths: dict[tuple[str, int], Tensor] = {}
        self._stats: dict[tuple[str, int], tuple[float | None, float | None]] = {}
        self._crossings: dict[tuple[str, int, int], np.ndarray] = {}
        self._reference: dict[str, tuple[float, Tensor]] = {}

        self._round = next(iter(fields or one_step))
        self._steps = self.steps_options[0]
        self._n_shown = min(_shown_count(n_shown, 10**9), n)
        self._highlight = True
        self._quiet = False
        with torch.no_grad(), single_threaded():
            self.state = self._computed(self._round, self._steps, self._n_shown)

        draft = go.Figure(data=self._empty_traces(), layout=self._layout(title))
        self._fill(draft, self.state)
        self.figure = LiveFigure(draft)

        self.steps_slider = widgets.SelectionSlider(
            options=list(self.steps_options),
            value=self._steps,
            description="Euler steps",
            continuous_update=True,
            layout=widgets.Layout(width="360px"),
        )
        self.round_buttons = widgets.ToggleButtons(
            options=list(fields) + list(one_step), value=self._round, description="round"
        )
        self.highlight_box = widgets.Checkbox(value=True, description="highlight crossings")
        self.shown_box = widgets.IntText(
            value=self._n_shown, description="paths shown", layout=widgets.Layout(width="200px")
        )
        self.shown_box.add_class("pflow-input")  # validated: the browser test types -1 here
        self.readout = widgets.HTML()
        self.message = message_label()
        send_values(self, self.set_steps, self.steps_slider)
        send_values(self, self.set_round, self.round_buttons)
        send_values(self, self.set_highlight, self.highlight_box)
        send_values(self, self.set_n_shown, self.shown_box)
        super().__init__(
            [
                widgets.HBox([self.steps_slider, self.round_buttons]),
                widgets.HBox([self.highlight_box, self.shown_box]),
                self.message,
                self.figure,
                self.readout,
            ]
        )
        self._write_readout(self.state)

    # --- computing ----------------------------------------------------------------------

    @property
    def rounds(self) -> tuple[str, ...]:
        """All labels: the velocity fields first, then the one-step maps."""
        return (*self.fields, *self.one_step)

    def paths(self, round_: str, steps: int) -> Tensor:
        """Euler paths (steps + 1, n, 2) of round ``round_`` (cached); (2, n, 2) for a map."""
        key = (round_, 1 if round_ in self.one_step else steps)
        if key not in self._paths:
            with torch.no_grad(), single_threaded():  # tiny tensors: one thread is faster
                if round_ in self.one_step:
                    end = torch.as_tensor(self.one_step[round_](self.z0)).to(F64)
                    if end.shape != self.z0.shape or not torch.isfinite(end).all():
                        raise ValueError(
                            f"one-step map {round_!r} must return finite (n, 2) points like z0"
                        )
                    traj = torch.stack([self.z0, end])
                else:
                    traj = euler_paths(self.fields[round_], self.z0, steps)
            self._paths[key] = traj
        return self._paths[key]

    def reference(self, round_: str) -> tuple[float, Tensor]:
        """(S, end points (n, 2)) of the round's fine Euler reference (reference_steps)."""
        if round_ not in self._reference:
            traj = self.paths(round_, self.reference_steps)
            self._reference[round_] = (straightness(traj), traj[-1])
        return self._reference[round_]

    def _computed(self, round_: str, steps: int, n_shown: int) -> ReflowState:
        if round_ not in self.rounds:
            raise ValueError(f"round must be one of {', '.join(self.rounds)}; got {round_!r}")
        if steps not in self.steps_options:
            raise ValueError(
                f"steps must be one of {', '.join(map(str, self.steps_options))}; got {steps!r}"
            )
        n_shown = _shown_count(n_shown, self.z0.shape[0])
        traj = self.paths(round_, steps)
        steps_key = traj.shape[0] - 1
        if (round_, steps_key) not in self._stats:
            energy = None if self.target is None else energy_distance(traj[-1], self.target)
            error = None
            if round_ in self.fields:
                error = float((traj[-1] - self.reference(round_)[1]).norm(dim=-1).mean())
            self._stats[(round_, steps_key)] = (energy, error)
        energy, error = self._stats[(round_, steps_key)]
        s = self.reference(round_)[0] if round_ in self.fields else None
        shown = np.sort(self._order[:n_shown])
        key = (round_, steps_key, n_shown)
        if key not in self._crossings:
            local = crossings(traj[:, shown], same_step=self.same_step).numpy()
            self._crossings[key] = shown[local] if len(local) else np.zeros((0, 2), dtype=int)
        return ReflowState(round_, steps, traj, shown, self._crossings[key], s, energy, error)

    # --- drawing --------------------------------------------------------------------------

    def _empty_traces(self) -> list[go.Scatter]:
        target = np.zeros((0, 2)) if self.target is None else self.target.numpy()
        target = target[self._drawn_target]
        return [
            go.Scatter(
                x=target[:, 0],
                y=target[:, 1],
                name="target",
                hoverinfo="skip",
                **marker_style(TARGET_COLOR, 4),
            ),
            go.Scatter(name="paths", hoverinfo="skip", **line_style(PATH_COLOR, 1)),
            go.Scatter(name="crossing paths", hoverinfo="skip", **line_style(CROSSING_COLOR, 1.5)),
            go.Scatter(name="starts z0", hoverinfo="skip", **marker_style(START_COLOR, 3)),
            go.Scatter(
                name="end points",
                hovertemplate="(%{x:.2f}, %{y:.2f})<extra>end point</extra>",
                **marker_style(END_COLOR, 4),
            ),
        ]

    def _layout(self, title: str | None) -> dict[str, Any]:
        # fixed limits from everything the first round can show, so rounds compare by eye
        parts = [self.z0, self.state.end_points]
        if self.target is not None:
            parts.append(self.target)
        if self.state.round in self.fields:
            parts.append(self.reference(self.state.round)[1])
        both = torch.cat(parts).numpy()
        layout = plane_layout(title, padded_range(both[:, 0]), padded_range(both[:, 1]), 520)
        layout["showlegend"] = True
        layout["legend"] = dict(orientation="h", y=-0.08)
        return layout

    def drawn_paths(self, state: ReflowState) -> np.ndarray:
        """Indices into z0 of the paths drawn: evenly spaced among ``state.shown``, at most
        max_line_points // (T + 2) of them (a path of T + 1 points and a break) and a
        quarter of max_markers (their starts are markers)."""
        per_path = state.trajectory.shape[0] + 1
        k = min(max(1, self.max_line_points // per_path), max(1, self.max_markers // 4))
        return state.shown[evenly_spaced(len(state.shown), k)]

    def _fill(self, fig: go.Figure, state: ReflowState) -> None:
        traj = state.trajectory.numpy()
        drawn = self.drawn_paths(state)
        crossing = np.unique(state.pairs) if self._highlight else np.zeros(0, dtype=int)
        crossing = np.intersect1d(crossing, drawn)
        plain = np.setdiff1d(drawn, crossing)
        _, lines, red, starts, ends = fig.data
        with fig.batch_update():
            lines.x, lines.y = polylines(traj[:, plain])
            red.x, red.y = polylines(traj[:, crossing])
            starts.x, starts.y = traj[0, drawn, 0], traj[0, drawn, 1]
            ends.x, ends.y = traj[-1, self._drawn_ends, 0], traj[-1, self._drawn_ends, 1]

    def _write_readout(self, state: ReflowState) -> None:
        is_map = state.round in self.one_step
        steps = "one-step map" if is_map else f"{state.steps} Euler step(s)"
        s = (
            "S = 0 by construction (one segment)"
            if state.straightness is None
            else f"straightness S = {state.straightness:.4f} (on {self.reference_steps} steps)"
        )
        parts = [
            f"<b>{state.round}</b>, {steps}",
            s,
            f"crossing pairs among the {len(state.shown)} shown paths: {state.crossing_count}",
        ]
        if state.energy is not None:
            parts.append(
                f"energy distance of the {len(state.end_points)} end points to the "
                f"target: {state.energy:.4f}"
            )
        if state.endpoint_error is not None:
            parts.append(
                f"mean |end point − {self.reference_steps}-step end point| = "
                f"{state.endpoint_error:.4f}"
            )
        m = 0 if self.target is None else self.target.shape[0]
        note = drawing_note(
            (len(self.drawn_paths(state)), len(state.shown), "shown paths"),
            (len(self._drawn_ends), len(state.end_points), "end points"),
            (len(self._drawn_target), m, "target samples"),
        )
        if note:
            parts.append(note)
        self.readout.value = " &nbsp;|&nbsp; ".join(parts)

    # --- controls ----------------------------------------------------------------------------

    def _show(self, round_: str, steps: int, n_shown: int, highlight: bool) -> bool:
        """Compute and draw a setting; on error show the message, keep the picture, False."""
        with shown_errors(self.message) as outcome, torch.no_grad(), single_threaded():
            state = self._computed(round_, steps, n_shown)
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "Showing the previous picture")
        self._round, self._steps, self._n_shown = round_, steps, state.shown.shape[0]
        self._highlight = bool(highlight)
        self.state = state
        self._fill(self.figure, state)
        self._write_readout(state)
        self._sync_controls()
        return True

    def _sync_controls(self) -> None:
        self._quiet = True
        try:
            self.steps_slider.value = self._steps
            self.round_buttons.value = self._round
            self.highlight_box.value = self._highlight
            self.shown_box.value = self._n_shown  # a rejected box value gives way
        finally:
            self._quiet = False

    def set_steps(self, steps: int) -> bool:
        """Show ``steps`` Euler steps (one of steps_options); False and a message if bad."""
        return self._show(self._round, steps, self._n_shown, self._highlight)

    def set_round(self, round_: str) -> bool:
        """Show the round (a label of fields or one_step); False and a message if unknown."""
        return self._show(round_, self._steps, self._n_shown, self._highlight)

    def set_n_shown(self, n_shown: int) -> bool:
        """Draw ``n_shown`` paths (an integer in [1, n]); False and a message if bad."""
        return self._show(self._round, self._steps, n_shown, self._highlight)

    def set_highlight(self, on: bool) -> bool:
        """Draw crossing paths in red (True) or like the others (False)."""
        return self._show(self._round, self._steps, self._n_shown, bool(on))
