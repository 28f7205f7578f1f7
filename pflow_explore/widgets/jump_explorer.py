"""Chapter 04: watch a consistency trajectory model jump, next to the exact jump.

Left, the jump G(x_t, t, s) (:mod:`pflow_explore.consistency`) of a cloud x_t ~ p_t: the
learned one and the exact PF-ODE solution from t to s, with a segment from each start to
its learned landing point. Right, gamma-sampling with NFE jumps from the same noise x_T,
with the learned jump and with the exact one (gamma = 0: long deterministic jumps, gamma =
1: jump to data and re-noise, the consistency model's sampler). The readout gives the mean
distance between learned and exact landing points, and each sampler's energy distance to
the data. Every result is cached per setting: moving back redraws without computing.

The two panels are two figures: plotly.js redraws a whole figure on any data change, about
50 us a marker on a 2-core laptop (benchmarks/results/plotly_redraw.md), so a t move redraws
the jump panel and not the sampling panel as well (measured when all points were drawn, as
one figure of 2,100 markers: a 230-260 ms task on the page's main thread a move, most of the
slider's latency). Titles, not make_subplots' subplot titles: an annotation's text change is
a whole redraw too.

Each panel draws at most ``max_markers`` markers (400) and ``max_line_points`` line points
(4,000): the jump panel an evenly spaced third of the cloud (x_t, both landings and the
segments of the same points; chapter 04: 133 of 300, 900 markers before), the sampling panel
evenly spaced samples (the same ones of both samplers) and data sharing the cap in
proportion, with at most 60 learned paths of drawn samples. The readout's numbers use all
points and it says what is drawn when it is a subset.

The construction computes the jumps of every t the t slider offers at the first s / t (one
exact dopri5 solve each, about 0.3 s at cpu scale for 300 points), so the first slider's
every move only draws (a first visit of a t cost one solve in the move, 25-65 ms in-process
and up to 155 ms in a Voila kernel beside other work); ``precompute=False`` skips it.

Time convention: diffusion, EDM's x_t = x0 + t z with the time equal to the noise level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor

from pflow_explore.consistency import gamma_sample, sampling_grid
from pflow_explore.metrics import energy_distance
from pflow_explore.scale import single_threaded
from pflow_explore.viz.arrays import polylines
from pflow_explore.viz.style import BLUE, GREEN, TEMPLATE, line_style, marker_style
from pflow_explore.widgets.controls import checked_number, put_back, send_values, set_quietly
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

Jump = Callable[[Tensor, float, float], Tensor]  # G(x (n, 2), t, s) -> (n, 2)
GREY = "rgba(120, 120, 120, 0.45)"
SEGMENT = "rgba(31, 119, 180, 0.25)"
TRACES = ("x_t", "segments", "exact G", "learned G", "data", "learned paths", "exact", "learned")
LEARNED_PATHS = 60  # the most learned sampling paths drawn


class JumpExplorer(widgets.VBox):
    """The jump of a learned CTM against the exact one, and gamma-sampling with both.

    learned, exact: jumps G(x, t, s); cloud(t) -> (n, 2) samples of p_t (the same noise at
    every t, so the cloud moves smoothly); x_T (m, 2) the sampling noise at times[0] (T);
    target (k, 2) data samples; times: the offered start times t (decreasing or not);
    precompute: compute the jump of every offered t at the first s / t now (module docstring);
    max_markers, max_line_points: the most markers and line points a panel draws (evenly
    spaced subsets; the readout's numbers use all points).

    Children: the t slider (the widget's first slider), the s/t slider, the t box (CSS class
    ``pflow-input``: any t in (0, T], bad input shows a message), the gamma and NFE
    sliders, the message line, the jump and sampling figures side by side (``.figure``,
    ``.sampling_figure``) and the readout. Code drives it with
    :meth:`set_jump` and :meth:`set_sampling`; bad values show a message, keep the picture.
    """

    def __init__(
        self,
        learned: Jump,
        exact: Jump,
        cloud: Callable[[float], Tensor],
        x_T: Tensor,
        target: Tensor,
        times: Sequence[float] = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 80.0),
        max_nfe: int = 8,
        precompute: bool = True,
        max_markers: int = MAX_DRAWN_MARKERS,
        max_line_points: int = MAX_DRAWN_LINE_POINTS,
    ) -> None:
        self.max_markers = checked_cap(max_markers, "max_markers")
        self.max_line_points = checked_cap(max_line_points, "max_line_points")
        self.learned, self.exact, self.cloud = learned, exact, cloud
        self.x_T, self.target = x_T, target
        self.t_max = float(max(times))
        self._jumps: dict[tuple[float, float], tuple[Tensor, Tensor, Tensor]] = {}
        self._samples: dict[tuple[int, float], tuple[Tensor, Tensor, Tensor]] = {}
        self._energies: dict[tuple[int, float], tuple[float, float]] = {}
        self._quiet = False
        self._error, self._energy = float("nan"), None  # the readout's numbers, once computed
        self._notes = {"jump": "", "sampling": ""}  # what a panel draws, when a subset
        self.t, self.ratio, self.gamma, self.nfe = 2.0 if 2.0 in times else times[0], 0.25, 0.0, 1
        # plain figures until the first picture is in them (below)
        self.figure, self.sampling_figure = (self._panel(TRACES[:4]), self._panel(TRACES[4:]))
        self.t_slider = widgets.SelectionSlider(
            options=sorted(float(t) for t in times), value=self.t, description="t (from)"
        )
        self.ratio_slider = widgets.FloatSlider(
            value=self.ratio, min=0.0, max=1.0, step=0.05, description="s / t"
        )
        self.t_box = widgets.FloatText(value=self.t, description="t =", layout={"width": "180px"})
        self.t_box.add_class("pflow-input")  # validated: the browser test types -1 here
        self.gamma_slider = widgets.FloatSlider(
            value=0.0, min=0.0, max=1.0, step=0.1, description="gamma"
        )
        self.nfe_slider = widgets.IntSlider(value=1, min=1, max=max_nfe, description="NFE")
        self.message, self.readout = message_label(), widgets.HTML()
        send_values(self, lambda t: self.set_jump(t, self.ratio), self.t_slider, self.t_box)
        send_values(self, lambda r: self.set_jump(self.t, r), self.ratio_slider)
        send_values(self, lambda g: self.set_sampling(self.nfe, g), self.gamma_slider)
        send_values(self, lambda n: self.set_sampling(n, self.gamma), self.nfe_slider)
        rows = [
            widgets.HBox([self.t_slider, self.ratio_slider, self.t_box]),
            widgets.HBox([self.gamma_slider, self.nfe_slider]),
        ]
        # draw the first picture into the plain figure, then make it live: what a widget
        # changes before it is displayed never reaches the browser's first render
        self.set_jump(self.t, self.ratio)
        self.set_sampling(self.nfe, self.gamma)
        if precompute:  # what the t slider will show: its moves then only draw
            for t in self.t_slider.options:
                self.jumped(t, self.ratio)
        self.figure = LiveFigure(self.figure)
        self.sampling_figure = LiveFigure(self.sampling_figure)
        panels = widgets.HBox([self.figure, self.sampling_figure])
        super().__init__([*rows, self.message, panels, self.readout])

    @classmethod
    def _panel(cls, names: Sequence[str]) -> go.Figure:
        """One panel: the traces ``names`` on [-4, 4]^2, equal axes, a title set when drawn."""
        fig = go.Figure([cls._empty(name) for name in names])
        fig.update_xaxes(range=[-4, 4])
        fig.update_yaxes(range=[-4, 4], scaleanchor="x")
        fig.update_layout(
            template=TEMPLATE,
            height=460,
            width=470,
            margin=dict(l=40, r=10, t=40, b=30),
            legend=dict(orientation="h"),
        )
        return fig

    @staticmethod
    def _empty(name: str) -> go.Scatter:
        styles = {
            "x_t": marker_style(GREY, 3),
            "segments": line_style(SEGMENT, 1),
            "exact G": marker_style(GREEN, 4),
            "learned G": marker_style(BLUE, 4),
            "data": marker_style(GREY, 3),
            "learned paths": line_style(SEGMENT, 1),
            "exact": marker_style(GREEN, 4),
            "learned": marker_style(BLUE, 4),
        }
        return go.Scatter(name=name, hoverinfo="skip", **styles[name])

    # --- computing ----------------------------------------------------------------------
    def jumped(self, t: float, ratio: float) -> tuple[Tensor, Tensor, Tensor]:
        """(x_t, learned G(x_t, t, s), exact G*(x_t, t, s)) for s = ratio t (cached)."""
        key = (t, ratio)
        if key not in self._jumps:
            with torch.no_grad(), single_threaded():
                x = self.cloud(t)
                s = ratio * t
                self._jumps[key] = (x, self.learned(x, t, s), self.exact(x.double(), t, s))
        return self._jumps[key]

    def sampled(self, nfe: int, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
        """(learned states (nfe + 1, m, 2), learned samples, exact samples) (cached)."""
        key = (nfe, gamma)
        if key not in self._samples:
            grid = sampling_grid(nfe, self.t_max)
            with torch.no_grad(), single_threaded():
                gen = lambda: torch.Generator().manual_seed(0)  # the same noise for both
                end, states = gamma_sample(self.learned, self.x_T, grid, gamma, gen(), True)
                exact, _ = gamma_sample(self.exact, self.x_T.double(), grid, gamma, gen())
            self._samples[key] = (states, end, exact.float())
        return self._samples[key]

    # --- controls ----------------------------------------------------------------------------
    def set_jump(self, t: Any, ratio: Any) -> bool:
        """Jump from time t in (0, T] to s = ratio t, ratio in [0, 1]; False and a message
        if either is bad (the picture stays)."""
        with shown_errors(self.message) as outcome:
            t = checked_number(t, "t", 0.0, above=True)
            if t > self.t_max:
                raise ValueError(f"t must be at most T = {self.t_max:g}, got {t:g}")
            ratio = checked_number(ratio, "s / t", 0.0)
            if ratio > 1:
                raise ValueError(f"s / t must lie in [0, 1], got {ratio:g}")
            x, g, g_star = self.jumped(t, ratio)
        if not outcome.ok:
            return put_back(self, self.t_box, self.t, outcome.error, "Showing the previous jump")
        self.t, self.ratio = t, ratio
        # the controls first, then the picture: once the figure has changed in the browser,
        # the boxes show their new values too (typing into t = before that got overwritten)
        if t in self.t_slider.options:
            set_quietly(self, self.t_slider, t)
        set_quietly(self, self.t_box, t)
        n = len(x)
        keep = evenly_spaced(n, max(1, self.max_markers // 3))  # x_t, both landings: markers
        a, b, c = x.numpy()[keep], g.float().numpy()[keep], g_star.float().numpy()[keep]
        self._notes["jump"] = drawing_note((len(keep), n, "points of the jump panel"))
        data = self.figure.data
        with self.figure.batch_update():
            data[0].x, data[0].y = a[:, 0], a[:, 1]
            data[1].x, data[1].y = polylines(np.stack([a, b]))
            data[2].x, data[2].y = c[:, 0], c[:, 1]
            data[3].x, data[3].y = b[:, 0], b[:, 1]
            self.figure.layout.title.text = f"jump from t = {t:g} to s = {ratio * t:.3g}"
        self._error = float((g.double() - g_star.double()).norm(dim=1).mean())
        self._write_readout()
        return True

    def set_sampling(self, nfe: Any, gamma: Any) -> bool:
        """gamma-sampling with ``nfe`` jumps (integer >= 1) and gamma in [0, 1]."""
        with shown_errors(self.message) as outcome:
            if isinstance(nfe, bool) or int(nfe) != nfe or nfe < 1:
                raise ValueError(f"NFE must be an integer >= 1, got {nfe!r}")
            gamma = checked_number(gamma, "gamma", 0.0)
            if gamma > 1:
                raise ValueError(f"gamma must lie in [0, 1], got {gamma:g}")
            states, end, exact = self.sampled(int(nfe), gamma)
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "Showing the previous samples")
        self.nfe, self.gamma = int(nfe), gamma
        near = states[1:].numpy() if len(states) > 2 else np.zeros((0, 0, 2))  # t <= T skipped
        data, target = self.sampling_figure.data, self.target.numpy()
        n, m = len(end), len(target)
        drawn_data, each, _ = marker_shares([m, n, n], self.max_markers)
        rows, keep = evenly_spaced(m, drawn_data), evenly_spaced(n, each)  # the same samples
        # paths of the first drawn learned samples, whole ones (nfe points and a break)
        paths = keep[: min(LEARNED_PATHS, max(1, self.max_line_points // (len(near) + 1)))]
        learned, exact_drawn = end[keep].numpy(), exact[keep].numpy()
        self._notes["sampling"] = drawing_note(
            (len(keep), n, "samples of each sampler"), (len(rows), m, "data points")
        )
        with self.sampling_figure.batch_update():
            data[0].x, data[0].y = target[rows, 0], target[rows, 1]
            data[1].x, data[1].y = polylines(near[:, paths]) if len(near) else ([], [])
            data[2].x, data[2].y = exact_drawn[:, 0], exact_drawn[:, 1]
            data[3].x, data[3].y = learned[:, 0], learned[:, 1]
            title = f"gamma-sampling, {self.nfe} NFE, gamma = {gamma:g}"
            self.sampling_figure.layout.title.text = title
        self._energy = self._energies_of(self.nfe, gamma, end, exact)
        self._write_readout()
        return True

    def _energies_of(
        self, nfe: int, gamma: float, end: Tensor, exact: Tensor
    ) -> tuple[float, float]:
        """(learned, exact) energy distances of the samples to the data (cached per setting:
        about 100 ms of CPU for 300 against 600 points, the whole cost of a move back)."""
        key = (nfe, gamma)
        if key not in self._energies:
            with torch.no_grad(), single_threaded():
                pair = (energy_distance(end, self.target), energy_distance(exact, self.target))
            self._energies[key] = pair
        return self._energies[key]

    def _write_readout(self) -> None:
        parts = [f"mean |learned G - exact G| = {self._error:.3f}"]
        if self._energy is not None:
            learned, exact = self._energy
            parts.append(f"energy distance to data: learned {learned:.4f}, exact {exact:.4f}")
        parts += [note for note in self._notes.values() if note]
        self.readout.value = " &nbsp;|&nbsp; ".join(parts)
