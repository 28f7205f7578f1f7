"""Step through a movie of N particles in the plane, coloured by a per-particle value.

Card 12_active_matter, "Explore": active particles coloured by their local entropy
production rate, with arrows of the probability current. One ``go.FigureWidget`` holds,
bottom to top: the box outline (a layout shape), the current arrows (ONE line trace,
tail, tip, break per arrow: one trace of 3N points updates far faster than N traces), and
the particles (one marker trace whose colours live on a colour range fixed across frames,
so a colour means the same value in every frame). Moving the slider (or Play, or
Prev/Next) rewrites the data of the two traces in place inside one ``batch_update``.

Time convention: physical time of the simulated particles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from pflow_explore.viz.arrays import as_numpy, padded_range
from pflow_explore.viz.points import plane_layout
from pflow_explore.viz.style import BLUE, line_style
from pflow_explore.widgets.controls import checked_number, quietly, set_quietly, shown
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label, show_rejected, shown_errors
from pflow_explore.widgets.stepping import StepControls

ARROW_COLOR = "rgba(40, 40, 40, 0.7)"
PLAIN_COLOR = BLUE
BOX_COLOR = "rgba(80, 80, 80, 0.8)"
MAX_DEFAULT_ARROWS = 1024  # beyond this the default draws every m-th arrow


def _finite(x: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argmax(bad.reshape(x.shape[0], -1).any(axis=1)))
        raise ValueError(
            f"{name} contain NaN or infinite values ({int(bad.sum())} of {bad.size} entries, "
            f"first in frame {first})"
        )


def validated_movie(
    frames: Any, colors: Any = None, currents: Any = None, times: Any = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Check and convert a particle movie; ValueError naming the bad argument if unusable.

    frames (T, N, 2) positions; colors (T, N) or None; currents (T, N, 2) or None; times
    (T,) or None (then 0, 1, ..., T-1). Returns float32 frames / colours / currents (half
    the bytes sent to the browser, ample for a plot) and float64 times.
    """
    x = as_numpy(frames, "frames", np.float32)
    if x.ndim != 3 or x.shape[2] != 2:
        raise ValueError(f"frames must have shape (T, N, 2), time first, got {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"frames need at least one frame and one particle, got {tuple(x.shape)}")
    _finite(x, "frames")
    t_count, n = x.shape[:2]
    c = None
    if colors is not None:
        c = as_numpy(colors, "colors", np.float32)
        if c.shape != (t_count, n):
            raise ValueError(
                f"colors must have shape (T, N) = ({t_count}, {n}) like frames, "
                f"got {tuple(c.shape)}"
            )
        _finite(c, "colors")
    v = None
    if currents is not None:
        v = as_numpy(currents, "currents", np.float32)
        if v.shape != x.shape:
            raise ValueError(
                f"currents must have shape (T, N, 2) = {tuple(x.shape)} like frames, "
                f"got {tuple(v.shape)}"
            )
        _finite(v, "currents")
    t = np.arange(t_count, dtype=np.float64) if times is None else as_numpy(times, "times")
    if t.shape != (t_count,):
        raise ValueError(f"times must have shape (T,) = ({t_count},), got {tuple(t.shape)}")
    if not np.isfinite(t).all():
        raise ValueError("times contain NaN or infinite values")
    return x, c, v, t


def default_color_range(colors: np.ndarray) -> tuple[float, float]:
    """The 1st to 99th percentile of all colour values: a few extreme particles (local EPR
    estimates are noisy) would otherwise wash out every other colour."""
    lo, hi = (float(q) for q in np.percentile(colors, [1, 99]))
    if not hi > lo:
        lo, hi = float(colors.min()), float(colors.max())
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def default_arrow_scale(currents: np.ndarray, spacing: float) -> float:
    """The scale that draws the 95th-percentile current 0.8 ``spacing`` long (1 if all zero).

    A percentile rather than the longest arrow, so one fast particle does not shrink
    every other arrow to a dot.
    """
    norms = np.linalg.norm(currents.reshape(-1, 2), axis=-1)
    typical = float(np.percentile(norms, 95)) if norms.size else 0.0
    return 0.8 * spacing / typical if typical > 0 and math.isfinite(typical) else 1.0


class ParticleMovie(StepControls, widgets.VBox):
    """Play and step through frames (T, N, 2) of particles, coloured by colors (T, N).

    Controls, top to bottom: Play / Prev / Next / the frame slider (the first slider of the
    widget) and the time; a readout of the frame's mean and total colour value; the arrow
    scale (FloatText), "arrow every" (IntText: draw the current of every m-th particle),
    both validated (CSS class ``pflow-input``), and the colour range (a range slider);
    the message line.

    ``box`` (a periodic box of side L) draws the box outline and folds positions into
    [origin, origin + L)^2 with origin = ``box_origin`` (default -L/2, the convention of
    :mod:`pflow_explore.datasets.particles`). ``currents`` (T, N, 2) draw an arrow from each
    (drawn) particle x_i to x_i + scale * j_i; ``arrow_scale=None`` picks
    :func:`default_arrow_scale` for the mean particle spacing. The colour range is fixed
    across frames (default :func:`default_color_range`).

    Code-facing setters mirror the controls: ``step_to(i)`` (raises ValueError out of range),
    ``set_color_range``, ``set_arrow_scale``, ``set_arrow_every`` and ``set_data`` (these
    four return False and show a message on bad input, keeping the last good picture).
    """

    step_noun = "frame"

    def __init__(
        self,
        frames: Any,
        colors: Any = None,
        currents: Any = None,
        box: float | None = None,
        color_label: str = "local EPR",
        arrow_scale: float | None = None,
        times: Any = None,
        arrow_every: int | None = None,
        color_range: tuple[float, float] | None = None,
        box_origin: float | None = None,
        title: str | None = None,
        colorscale: str = "Viridis",
        marker_size: float | None = None,
        interval_ms: int = 150,
        height: int = 520,
    ) -> None:
        what = "None or a finite side length"
        self.box = None if box is None else checked_number(box, "box", 0.0, above=True, what=what)
        self.box_origin = -self.box / 2 if box is not None and box_origin is None else box_origin
        self.color_label = str(color_label)
        self._step = 0
        x, c, v, t = validated_movie(frames, colors, currents, times)
        self._set_arrays(x, c, v, t)
        n = x.shape[1]
        if arrow_every is None:
            arrow_every = max(1, math.ceil(n / MAX_DEFAULT_ARROWS))
        self._arrow_every = self._checked_every(arrow_every)
        self._arrow_scale = (
            self._auto_arrow_scale() if arrow_scale is None else self._checked_scale(arrow_scale)
        )
        self._color_range = (
            self._auto_color_range() if color_range is None else self._checked_range(*color_range)
        )
        if marker_size is None:
            marker_size = float(np.clip(300 / math.sqrt(n), 3, 10))

        draft = go.Figure(layout=self._layout(title, height))
        draft.add_trace(
            go.Scatter(name="current", hoverinfo="skip", **line_style(ARROW_COLOR, 1.2))
        )
        draft.add_trace(
            go.Scatter(
                mode="markers",
                name="particles",
                marker=dict(
                    size=marker_size,
                    colorscale=colorscale,
                    colorbar=dict(title=dict(text=self.color_label), thickness=14),
                    line=dict(width=0),
                ),
            )
        )
        # The first picture goes into the plain Figure before it is wrapped: a page that
        # connects later (Voila) builds the figure from its state at construction.
        self._style_into(draft.data[1])
        self._draw_into(draft.data[0], draft.data[1], 0)
        self.figure = LiveFigure(draft)
        self._arrows, self._particles = self.figure.data

        steps_row = self._build_controls(interval_ms)
        super().__init__(
            [
                self.figure,
                steps_row,
                self.readout,
                widgets.HBox([self.arrow_scale_box, self.arrow_every_box, self.color_slider]),
                self.message,
            ]
        )
        self.step_to(0)

    # --- data -------------------------------------------------------------------------

    def _set_arrays(
        self, x: np.ndarray, c: np.ndarray | None, v: np.ndarray | None, t: np.ndarray
    ) -> None:
        if self.box is not None:
            # Fold positions into the drawn box, as the periodic simulation sees them.
            # (Only those outside move: folding costs float32 digits.)
            o, side = np.float32(self.box_origin), np.float32(self.box)
            x = np.where((x < o) | (x >= o + side), (x - o) % side + o, x)
        self._x, self._c, self._v, self._t = x, c, v, t

    @property
    def n_steps(self) -> int:
        """The last frame index T - 1."""
        return self._x.shape[0] - 1

    frames = shown(
        "_x", "Positions (T, N, 2) now shown (float32, folded into the box if there is one)."
    )
    colors = shown("_c", "Colour values (T, N) now shown, or None.")
    currents = shown("_v", "Arrows (T, N, 2) now shown, or None.")
    arrow_scale = shown("_arrow_scale", "Drawn arrow = scale * current.")
    arrow_every = shown("_arrow_every", "The current of every m-th particle is drawn.")
    color_range = shown(
        "_color_range", "(cmin, cmax) of the colour scale, the same for all frames."
    )

    def _limits(self) -> tuple[tuple[float, float], tuple[float, float]]:
        if self.box is not None:
            pad = 0.03 * self.box
            lim = (self.box_origin - pad, self.box_origin + self.box + pad)
            return lim, lim
        return padded_range(self._x[..., 0]), padded_range(self._x[..., 1])

    def _spacing(self) -> float:
        (x0, x1), (y0, y1) = self._limits()
        return math.sqrt(max((x1 - x0) * (y1 - y0), 1e-12) / self._x.shape[1])

    def _auto_arrow_scale(self) -> float:
        return 1.0 if self._v is None else default_arrow_scale(self._v, self._spacing())

    def _auto_color_range(self) -> tuple[float, float]:
        return (0.0, 1.0) if self._c is None else default_color_range(self._c)

    def _layout(self, title: str | None, height: int) -> dict[str, Any]:
        layout = plane_layout(title, *self._limits(), height=height)
        if self.box is not None:
            o, side = self.box_origin, self.box
            layout["shapes"] = [
                dict(
                    type="rect",
                    x0=o,
                    y0=o,
                    x1=o + side,
                    y1=o + side,
                    line=dict(color=BOX_COLOR, width=1.5),
                    layer="below",
                )
            ]
        return layout

    # --- controls ---------------------------------------------------------------------

    def _build_controls(self, interval_ms: int) -> widgets.HBox:
        """The frame row (returned) and the arrow/colour controls; each calls its setter."""
        steps_row = self.step_row(interval_ms, noun="frame", time_label=widgets.Label)
        self.readout = widgets.HTML()
        self.message = message_label()
        self.arrow_scale_box = widgets.FloatText(
            value=self._arrow_scale,
            description="arrow scale",
            style={"description_width": "76px"},
            layout=widgets.Layout(width="190px"),
        )
        self.arrow_every_box = widgets.IntText(
            value=self._arrow_every,
            description="arrow every",
            style={"description_width": "76px"},
            layout=widgets.Layout(width="160px"),
        )
        for box in (self.arrow_scale_box, self.arrow_every_box):
            box.add_class("pflow-input")  # validated: the browser test types bad values here
            box.disabled = self._v is None
        self.color_slider = widgets.FloatRangeSlider(
            description="colour range",
            continuous_update=False,
            readout_format=".3g",
            style={"description_width": "86px"},
            layout=widgets.Layout(width="380px"),
        )
        self._fit_color_slider()
        self.arrow_scale_box.observe(self._on_control, names="value")
        self.arrow_every_box.observe(self._on_control, names="value")
        self.color_slider.observe(self._on_control, names="value")
        return steps_row

    def _on_control(self, change: dict[str, Any]) -> None:
        if self._quiet_controls:  # the widget itself is moving the control
            return
        owner, new = change["owner"], change["new"]
        if owner is self.arrow_scale_box:
            self.set_arrow_scale(new)
        elif owner is self.arrow_every_box:
            self.set_arrow_every(new)
        else:
            self.set_color_range(*new)

    def _fit_color_slider(self) -> None:
        """Span the slider over all colour values and the current range, without callbacks."""
        lo, hi = self._color_range
        if self._c is not None:
            lo, hi = min(lo, float(self._c.min())), max(hi, float(self._c.max()))
        with quietly(self, "_quiet_controls"):
            s = self.color_slider
            # widen first, so setting min / max never clamps the value on the way
            s.min, s.max = min(s.min, lo), max(s.max, hi)
            s.step = (hi - lo) / 200
            s.value = self._color_range
            s.min, s.max = lo, hi
            s.disabled = self._c is None

    _quiet_controls = False

    @staticmethod
    def _checked_scale(scale: Any) -> float:
        return checked_number(scale, "arrow scale", 0.0, above=True)

    def _checked_every(self, every: Any) -> int:
        n = self._x.shape[1]
        if (
            isinstance(every, bool)
            or not isinstance(every, int | np.integer)
            or not 1 <= every <= n
        ):
            raise ValueError(
                f"arrow every (draw every m-th particle's current) must be an integer in "
                f"[1, {n}], got {every!r}"
            )
        return int(every)

    @staticmethod
    def _checked_range(lo: Any, hi: Any) -> tuple[float, float]:
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"colour range must be finite with min < max, got ({lo}, {hi})")
        return lo, hi

    # --- setters (code and controls) --------------------------------------------------

    def _rejected(self, outcome: shown_errors, keeps: str) -> bool:
        return show_rejected(self.message, outcome.error, f"Keeping the previous {keeps}")

    def _set_option(self, name: str, value: Any, check: Callable[[Any], Any], kept: str) -> bool:
        """``self._<name> = check(value)``, redraw, and move the box ``<name>_box`` to it; a
        bad value shows a message naming what is kept (``kept`` formatted with the old
        value) and returns False."""
        with shown_errors(self.message) as outcome:
            setattr(self, f"_{name}", check(value))
            self._redraw()
        if not outcome.ok:
            return self._rejected(outcome, kept.format(getattr(self, f"_{name}")))
        self._sync_box(getattr(self, f"{name}_box"), getattr(self, f"_{name}"))
        return True

    def set_arrow_scale(self, scale: float) -> bool:
        """Draw arrows as scale * current; False (and a message) unless 0 < scale < inf."""
        return self._set_option("arrow_scale", scale, self._checked_scale, "arrow scale ({:.4g})")

    def set_arrow_every(self, every: int) -> bool:
        """Draw the current of particles 0, m, 2m, ...; False (and a message) unless 1 <= m <= N."""
        return self._set_option("arrow_every", every, self._checked_every, "arrows (every {})")

    def set_color_range(self, lo: float, hi: float) -> bool:
        """Fix the colour scale to [lo, hi] for all frames; False (and a message) if lo >= hi."""
        with shown_errors(self.message) as outcome:
            self._color_range = self._checked_range(lo, hi)
            self._redraw(style=True)
        if not outcome.ok:
            return self._rejected(outcome, "colour range")
        if tuple(self.color_slider.value) != self._color_range:
            self._fit_color_slider()
        return True

    def _sync_box(self, box: widgets.Widget, value: float) -> None:
        """Show ``value`` in ``box`` (after a code-side set) without re-entering the setter."""
        set_quietly(self, box, value, "_quiet_controls")

    def set_data(
        self, frames: Any, colors: Any = None, currents: Any = None, times: Any = None
    ) -> bool:
        """Show a new movie in the same figure; arrow scale and colour range are re-picked.

        Returns True on success. Bad input (shapes, NaN) shows a message, keeps the last
        good picture and returns False: it never raises.
        """
        with shown_errors(self.message) as outcome:
            x, c, v, t = validated_movie(frames, colors, currents, times)
        if not outcome.ok:
            return self._rejected(outcome, "movie")
        self._set_arrays(x, c, v, t)
        self._arrow_every = min(self._arrow_every, x.shape[1])
        self._arrow_scale = self._auto_arrow_scale()
        self._color_range = self._auto_color_range()
        self._step = min(self._step, self.n_steps)
        self._fit_step_range()
        self._sync_box(self.arrow_scale_box, self._arrow_scale)
        self._sync_box(self.arrow_every_box, self._arrow_every)
        for box in (self.arrow_scale_box, self.arrow_every_box):
            box.disabled = v is None
        self._fit_color_slider()
        with self.figure.batch_update():
            if self.box is None:
                xlim, ylim = self._limits()
                self.figure.layout.xaxis.range = xlim
                self.figure.layout.yaxis.range = ylim
            self._style_into(self._particles)
        self.step_to(self._step)
        return True

    # --- drawing ----------------------------------------------------------------------

    def arrow_segments(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """x, y of the arrow trace at frame i: per drawn particle j (0, m, 2m, ...) the tail
        x_j, the tip x_j + scale * j_j and a NaN break (3 entries each); empty without currents.
        """
        if self._v is None:
            empty = np.zeros(0, dtype=np.float32)
            return empty, empty
        tail = self._x[i, :: self._arrow_every]
        tip = tail + np.float32(self._arrow_scale) * self._v[i, :: self._arrow_every]
        gap = np.full_like(tail, np.nan)
        seg = np.stack([tail, tip, gap], axis=1).reshape(-1, 2)
        return seg[:, 0], seg[:, 1]

    def _draw_into(self, arrows: Any, particles: Any, i: int) -> None:
        """Frame i's data: arrows, positions and colours (what changes from frame to frame)."""
        now = self._x[i]
        ax, ay = self.arrow_segments(i)
        arrows.x, arrows.y = ax, ay
        particles.x, particles.y = now[:, 0], now[:, 1]
        particles.marker.color = PLAIN_COLOR if self._c is None else self._c[i]

    def _style_into(self, particles: Any) -> None:
        """What changes only with the data or the colour range: scale, colour bar, hover."""
        if self._c is None:
            particles.marker.showscale = False
            particles.hovertemplate = "(%{x:.3f}, %{y:.3f})<extra></extra>"
            return
        particles.marker.cmin, particles.marker.cmax = self._color_range
        particles.marker.showscale = True
        particles.hovertemplate = (
            "(%{x:.3f}, %{y:.3f})<br>" + self.color_label + " = %{marker.color:.4g}<extra></extra>"
        )

    def _redraw(self, style: bool = False) -> None:
        with self.figure.batch_update():
            if style:
                self._style_into(self._particles)
            self._draw_into(self._arrows, self._particles, self._step)

    def _show_step(self, i: int) -> None:
        """Frame i in [0, T-1] (``step_to``): positions, colours and arrows of that frame.

        Only trace data change (in place, one batched message).
        """
        self._redraw()
        n = self._x.shape[1]
        self.time_label.value = f"t = {self._t[self._step]:.3f}"
        text = f"frame {self._step} of {self.n_steps}, t = {self._t[self._step]:.3f}, N = {n}"
        if self._c is not None:
            values = self._c[self._step].astype(np.float64)
            text += (
                f" &nbsp;|&nbsp; {self.color_label}: mean per particle = {values.mean():.4g},"
                f" total = {values.sum():.4g}"
            )
        self.readout.value = text
