"""Chapter 11's explorer: a real and a generated video side by side, with their NSG maps and
where their detection scores fall against the threshold.

:class:`NSGExplorer` plays a real video and a fake one (flicker, cross-fade, jitter or zoom)
frame by frame (Play / Prev / Next / frame slider), each beside its NSG map (red-blue, 0
white), and draws the witness scores of every test video, real and of the chosen fake type,
against the detection threshold of the chosen reference-set size, the two shown videos
starred. The readout gives their scores and the set-level MMD permutation test (a handful
of test videos of the chosen kind against the reference set: MMD^2, its permutation
threshold, the p-value). Everything is precomputed per reference size, so every control
answers at once.

Time convention: physical time (video time t, in frames).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from pflow_explore.viz.style import BLUE, GRAY, RED, TEMPLATE
from pflow_explore.widgets.controls import checked_choice, put_back, send_values, set_quietly
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label, show_rejected, shown_errors
from pflow_explore.widgets.stepping import StepControls

REAL = "real"


class NSGExplorer(StepControls, widgets.VBox):
    """videos / nsg_maps: kind -> (k, T, S, S) example videos and their NSG maps (kind
    "real" and the fake kinds); test_scores: ref size -> kind -> (n,) witness scores of the
    test videos; example_scores: ref size -> kind -> (k,); thresholds: ref size -> float;
    set_tests: ref size -> kind -> [MMD^2, permutation threshold, p-value].

    Controls: the frame row (the page's first slider, starting at frame 0), the fake type,
    the video number (a box, CSS class ``pflow-input``: 0 .. k - 1) and the reference-set
    size; bad input leaves the picture and says why."""

    step_noun = "frame"

    def __init__(
        self,
        videos: Mapping[str, Tensor],
        nsg_maps: Mapping[str, Tensor],
        test_scores: Mapping[int, Mapping[str, Tensor]],
        example_scores: Mapping[int, Mapping[str, Tensor]],
        thresholds: Mapping[int, float],
        set_tests: Mapping[int, Mapping[str, list[float]]],
    ) -> None:
        if REAL not in videos or len(videos) < 2:
            raise ValueError("videos needs the kind 'real' and at least one fake kind")
        self.videos, self.nsg_maps = dict(videos), dict(nsg_maps)
        self.test_scores, self.example_scores = test_scores, example_scores
        self.thresholds, self.set_tests = thresholds, set_tests
        self.fakes = [k for k in videos if k != REAL]
        self.sizes = sorted(int(n) for n in thresholds)
        self.kind, self.index, self.size, self._step = self.fakes[0], 0, self.sizes[-1], 0
        self.n_videos = min(len(v) for v in videos.values())
        self.message, self.readout = message_label(), widgets.HTML()
        maps = torch.cat([m.flatten() for m in nsg_maps.values()]).abs()
        self._nsg_range = float(torch.quantile(maps.float(), 0.99)) or 1.0
        fig = make_subplots(
            1,
            5,
            column_widths=[0.17, 0.17, 0.17, 0.17, 0.32],
            horizontal_spacing=0.03,
            subplot_titles=("real video", "its NSG", "fake video", "its NSG", "scores"),
        )
        r = self._nsg_range
        for col in range(4):
            gray = col % 2 == 0
            heat = go.Heatmap(
                z=[[0.0]],
                colorscale="gray" if gray else "RdBu",
                showscale=False,
                zmin=-1.0 if gray else -r,
                zmax=1.0 if gray else r,
                hoverinfo="skip",
            )
            fig.add_trace(heat, 1, col + 1)
        dots = lambda name, color: go.Scatter(
            name=name,
            mode="markers",
            hoverinfo="skip",
            marker=dict(color=color, size=5, opacity=0.6),
        )
        fig.add_trace(dots("real test videos", BLUE), 1, 5)
        fig.add_trace(dots("fake test videos", RED), 1, 5)
        star = go.Scatter(
            name="shown videos", mode="markers", marker=dict(color="black", size=14, symbol="star")
        )
        fig.add_trace(star, 1, 5)
        fig.add_trace(
            go.Scatter(name="threshold", mode="lines", line=dict(color=GRAY, dash="dash")), 1, 5
        )
        for col in range(1, 5):
            fig.update_xaxes(visible=False, row=1, col=col)
            fig.update_yaxes(
                visible=False, scaleanchor=f"x{col if col > 1 else ''}", row=1, col=col
            )
        fig.update_xaxes(
            tickvals=[0, 1], ticktext=["real", "fake"], range=[-0.6, 1.6], row=1, col=5
        )
        fig.update_yaxes(title_text="witness score", row=1, col=5)
        fig.update_layout(
            template=TEMPLATE,
            height=330,
            width=1050,
            margin=dict(t=50, b=40),
            legend=dict(orientation="h", y=-0.15),
        )
        self.figure: go.Figure = fig  # plain until the first picture is in it (below)
        row = self.step_row(500, noun="frame", last=self.n_frames - 1)
        self.kind_menu = widgets.Dropdown(options=self.fakes, value=self.kind, description="fake")
        self.index_box = widgets.IntText(value=0, description="video #", layout={"width": "160px"})
        self.index_box.add_class("pflow-input")  # validated: the browser test types -1 here
        self.size_slider = widgets.SelectionSlider(
            options=self.sizes, value=self.size, description="reference"
        )
        send_values(self, self.set_kind, self.kind_menu)
        send_values(self, self.set_index, self.index_box)
        send_values(self, self.set_size, self.size_slider)
        self._draw_scores()
        self._show_step(0)
        self.figure = LiveFigure(fig)
        settings = widgets.HBox([self.kind_menu, self.index_box, self.size_slider])
        super().__init__([row, settings, self.message, self.figure, self.readout])

    @property
    def n_frames(self) -> int:
        return int(self.videos[REAL].shape[1])

    @property
    def n_steps(self) -> int:
        """The last frame index."""
        return self.n_frames - 1

    # --- drawing -------------------------------------------------------------------------
    def _picture(self, kind: str, what: Mapping[str, Tensor], t: int) -> list:
        return what[kind][self.index, t].flip(0).tolist()

    def _show_step(self, i: int) -> None:
        data = self.figure.data
        with self.figure.batch_update():
            data[0].z = self._picture(REAL, self.videos, i)
            data[1].z = self._picture(REAL, self.nsg_maps, i)
            data[2].z = self._picture(self.kind, self.videos, i)
            data[3].z = self._picture(self.kind, self.nsg_maps, i)
            self.figure.layout.annotations[2].text = f"fake: {self.kind}"
        self.time_label.value = f"frame {i + 1} / {self.n_frames}"

    def _draw_scores(self) -> None:
        sc, data = self.test_scores[self.size], self.figure.data
        rng = np.random.default_rng(0)
        real, fake = sc[REAL].float().numpy(), sc[self.kind].float().numpy()
        ex = self.example_scores[self.size]
        ex_real, ex_fake = float(ex[REAL][self.index]), float(ex[self.kind][self.index])
        thr = float(self.thresholds[self.size])
        with self.figure.batch_update():
            data[4].x, data[4].y = (rng.uniform(-0.25, 0.25, len(real))).tolist(), real.tolist()
            data[5].x, data[5].y = (1 + rng.uniform(-0.25, 0.25, len(fake))).tolist(), fake.tolist()
            data[6].x, data[6].y = [0, 1], [ex_real, ex_fake]
            data[7].x, data[7].y = [-0.5, 1.5], [thr, thr]
        call = lambda v: "<b>flagged fake</b>" if v > thr else "passes as real"
        stat, perm_thr, p = self.set_tests[self.size][self.kind]
        rstat, rthr, rp = self.set_tests[self.size][REAL]
        self.readout.value = (
            f"Reference set: {self.size} real videos; threshold {thr:.4f} (set on held-out real "
            f"videos). Real video #{self.index}: score {ex_real:.4f}, {call(ex_real)}; "
            f"{self.kind} video #{self.index}: score {ex_fake:.4f}, {call(ex_fake)}.<br>"
            f"Set-level MMD test against the reference: {self.kind} test videos MMD<sup>2</sup> "
            f"{stat:.4f} vs permutation threshold {perm_thr:.4f} (p = {p:.3f}); real test videos "
            f"{rstat:.4f} vs {rthr:.4f} (p = {rp:.3f})."
        )

    # --- controls ------------------------------------------------------------------------
    def set_kind(self, kind: Any) -> bool:
        """Show a fake of type ``kind``; False and a message otherwise."""
        with shown_errors(self.message) as outcome:
            checked_choice(kind, self.fakes, "fake type")
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "Showing the previous videos")
        self.kind = kind
        set_quietly(self, self.kind_menu, kind)
        self._draw_scores()
        self._show_step(self._step)
        return True

    def set_index(self, index: Any) -> bool:
        """Show video number ``index`` (0 .. k - 1) of each kind; False and a message
        otherwise (the box goes back to the shown number)."""
        with shown_errors(self.message) as outcome:
            ok = isinstance(index, int | float) and not isinstance(index, bool)
            if not ok or int(index) != index or not 0 <= index < self.n_videos:
                raise ValueError(
                    f"video # must be a whole number 0 .. {self.n_videos - 1}, got {index!r}"
                )
            index = int(index)
        if not outcome.ok:
            return put_back(
                self, self.index_box, self.index, outcome.error, "Showing the previous videos"
            )
        self.index = index
        set_quietly(self, self.index_box, index)
        self._draw_scores()
        self._show_step(self._step)
        return True

    def set_size(self, size: Any) -> bool:
        """Use the reference set of ``size`` videos (one of the precomputed sizes)."""
        with shown_errors(self.message) as outcome:
            checked_choice(size, self.sizes, "reference size")
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "Showing the previous reference")
        self.size = int(size)
        set_quietly(self, self.size_slider, self.size)
        self._draw_scores()
        return True
