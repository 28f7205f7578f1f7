"""Chapter 07's fine-tuning, live: draw a box on the plane, then fine-tune the trained 2D
model through its sampler until its samples land there.

:class:`RegionFinetuner` holds a copy of a trained eps-model (the original is never
changed). A box selection on the plane (or the two range sliders) sets the region; each
press of *Fine-tune* runs ``steps per press`` Adam steps on the weights with the goal
:func:`adjoint.distance_to_box` (to the box shrunk by ``margin``), each gradient by the
adjoint (:func:`adjoint.finetune_step`: one forward solve, one backward solve of the
augmented ODE, a fresh batch of x_T per step). The same ``n_show`` noises are sampled by the
pretrained model (gray) and the current one (blue), so the plane shows where each sample
moved; the figure beside it is the goal loss per step. *Reset* restores the pretrained weights.
A step that returns NaN (too large a learning rate) restores the weights of before the press
and says so; a box that is empty or inverted is refused with a message.

Time convention: diffusion (t = 0 data); the sampler runs in rho = sigma / alpha from rho_T
down to 0 on ``grid``.
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from pflow_explore import adjoint as ad
from pflow_explore import paths
from pflow_explore.scale import single_threaded
from pflow_explore.viz.arrays import plain_floats
from pflow_explore.viz.style import BLUE, GRAY, TEMPLATE
from pflow_explore.widgets.controls import set_quietly
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label, show_rejected, shown_errors
from pflow_explore.widgets.redraw_budget import (
    MAX_DRAWN_MARKERS,
    checked_cap,
    drawing_note,
    evenly_spaced,
    marker_shares,
)

EXTENT = 1.6  # the plane spans [-EXTENT, EXTENT]^2
GRID = 33  # invisible hit points per axis (plotly reports selections on points only)
MAX_STEPS_PER_PRESS = 20


def checked_box(low: Sequence[float], high: Sequence[float], margin: float) -> tuple:
    """(low, high) as float pairs inside the plane, wider than 2 * margin on each axis;
    ValueError naming what is wrong otherwise."""
    try:
        lo, hi = [float(v) for v in low], [float(v) for v in high]
    except (TypeError, ValueError):
        raise ValueError(f"the box needs numbers, got {low!r} and {high!r}") from None
    if len(lo) != 2 or len(hi) != 2 or not all(math.isfinite(v) for v in lo + hi):
        raise ValueError(f"the box needs two finite corners (x, y), got {low!r} and {high!r}")
    if min(b - a for a, b in zip(lo, hi, strict=True)) <= 2 * margin:
        raise ValueError(
            f"the box must be wider than {2 * margin:.2g} on both axes (the goal is the box "
            f"shrunk by {margin:.2g} on each side), got x {lo[0]:.2f}..{hi[0]:.2f}, "
            f"y {lo[1]:.2f}..{hi[1]:.2f}"
        )
    lo = [max(v, -EXTENT) for v in lo]
    hi = [min(v, EXTENT) for v in hi]
    return (lo[0], lo[1]), (hi[0], hi[1])


def outline(low: Sequence[float], high: Sequence[float]) -> tuple[list[float], list[float]]:
    """The x and y of the closed rectangle [low, high] (five corners, for a line trace)."""
    (x0, y0), (x1, y1) = low, high
    return [x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0]


class RegionFinetuner(widgets.VBox):
    """model: a trained eps-model of 2D data, ``model(x (n, 2), t (n,)) -> (n, 2)``;
    path: its noise path; grid: the rho grid of its sampler (rho_T .. 0); method: the
    sampler's step ("rk4", "heun", ...); box: ((x0, y0), (x1, y1)); margin: the goal is the
    box shrunk by this much; batch: x_T per fine-tuning step; lr: Adam's learning rate;
    n_show: samples on the plane (the same noises before and after; the share in the box
    counts all of them); max_markers: the most of them drawn, both sets together (an evenly
    spaced subset, said in the readout: ``widgets.redraw_budget``); seed: those noises and
    the fine-tuning batches."""

    def __init__(
        self,
        model: nn.Module,
        path: paths.Path,
        grid: Tensor,
        method: str = "rk4",
        box: tuple[Sequence[float], Sequence[float]] = ((0.35, 0.35), (1.05, 1.05)),
        margin: float = 0.15,
        batch: int = 128,
        lr: float = 3e-4,
        n_show: int = 1000,
        seed: int = 0,
        max_markers: int = MAX_DRAWN_MARKERS,
    ) -> None:
        self.path, self.grid, self.method = path, ad.check_grid(grid), method
        self.margin, self.batch, self.lr = float(margin), int(batch), float(lr)
        self._base = copy.deepcopy(model).eval()
        self.flow = ad.RhoFlow(copy.deepcopy(model).eval(), path)
        self._gen = torch.Generator().manual_seed(seed)
        self._x_show = torch.randn(n_show, 2, generator=torch.Generator().manual_seed(seed + 1))
        each = marker_shares([n_show, n_show], checked_cap(max_markers, "max_markers"))[0]
        self._drawn = evenly_spaced(n_show, each)  # the same noises in both sets
        self.box = checked_box(*box, self.margin)
        self.losses: list[float] = []
        self.nfe_per_step = 0
        self.seconds_per_press = 0.0
        self._quiet = False
        # Adam is made at the first press: torch's first optimizer imports torch._dynamo
        # (1.1 s), which a dashboard page would otherwise wait for before its first picture
        self.optimizer: torch.optim.Optimizer | None = None
        with torch.no_grad(), single_threaded():
            self.before = ad.sample(ad.RhoFlow(self._base, path), self._x_show, self.grid, method)
        self.now = self.before.clone()

        lin = np.linspace(-EXTENT, EXTENT, GRID)
        gx, gy = np.meshgrid(lin, lin)
        hit = dict(
            type="scatter", x=gx.ravel(), y=gy.ravel(), mode="markers", hoverinfo="none",
            showlegend=False, marker=dict(size=9, opacity=0), name="plane",
        )  # fmt: skip
        samples = [
            dict(type="scatter", mode="markers", name=name, marker=dict(size=3, color=color))
            for name, color in (("pretrained", GRAY), ("fine-tuned", BLUE))
        ]
        # the region and the goal's box as line traces (redrawn in the same batch as the samples)
        boxes = [
            dict(type="scatter", mode="lines", name=name, hoverinfo="skip",
                 line=dict(color="#d62728", width=width, dash=dash))
            for name, width, dash in (("region", 2, "solid"), ("goal", 1, "dot"))
        ]  # fmt: skip
        fig = go.Figure(
            data=[hit, *samples, *boxes],
            layout=dict(
                template=TEMPLATE, height=430, width=460, dragmode="select", hovermode="closest",
                title="samples: drag a box to move the region", margin=dict(l=40, r=10, t=40, b=40),
                xaxis=dict(range=[-EXTENT, EXTENT]), yaxis=dict(range=[-EXTENT, EXTENT]),
                legend=dict(orientation="h", y=-0.12),
            ),
        )  # fmt: skip
        loss = go.Figure(
            data=[dict(type="scatter", mode="lines+markers", name="goal loss")],
            layout=dict(
                template=TEMPLATE, height=430, width=420, title="goal loss per step",
                xaxis_title="fine-tuning step", yaxis_type="log",
                margin=dict(l=50, r=10, t=40, b=40),
            ),
        )  # fmt: skip
        self.loss_figure: go.Figure = loss
        self.figure: go.Figure = fig  # plain until the first picture is in it (below)

        slider = dict(min=-EXTENT, max=EXTENT, step=0.05, readout_format=".2f")
        self.x_range = widgets.FloatRangeSlider(
            value=[self.box[0][0], self.box[1][0]], description="box x", **slider
        )
        self.y_range = widgets.FloatRangeSlider(
            value=[self.box[0][1], self.box[1][1]], description="box y", **slider
        )
        for control in (self.x_range, self.y_range):
            control.observe(self._on_range, names="value")
        self.steps_slider = widgets.IntSlider(
            value=5, min=1, max=MAX_STEPS_PER_PRESS, description="steps per press"
        )
        self.steps_slider.style.description_width = "initial"
        self.tune_button = widgets.Button(description="Fine-tune", button_style="primary")
        self.tune_button.on_click(lambda _b: self.finetune(self.steps_slider.value))
        self.reset_button = widgets.Button(description="Reset")
        self.reset_button.on_click(lambda _b: self.reset())
        self.message, self.readout = message_label(), widgets.HTML()
        self._draw()
        self.figure, self.loss_figure = LiveFigure(fig), LiveFigure(loss)
        self.figure.data[0].on_selection(self._on_select)
        super().__init__(
            [
                widgets.HBox([self.x_range, self.y_range]),
                widgets.HBox([self.steps_slider, self.tune_button, self.reset_button]),
                self.message,
                widgets.HBox([self.figure, self.loss_figure]),
                self.readout,
            ]
        )

    # ---- state ---------------------------------------------------------------------------
    @property
    def goal_box(self) -> tuple[list[float], list[float]]:
        """The goal's box: :attr:`box` shrunk by ``margin`` on each side."""
        (x0, y0), (x1, y1), m = *self.box, self.margin
        return [x0 + m, y0 + m], [x1 - m, y1 - m]

    def share_in_box(self, x: Tensor) -> float:
        """The share of the rows of x (n, 2) inside :attr:`box`."""
        lo, hi = (torch.tensor(c, dtype=x.dtype) for c in self.box)
        return float(((x >= lo) & (x <= hi)).all(-1).float().mean())

    # ---- actions -------------------------------------------------------------------------
    def set_box(self, low: Sequence[float], high: Sequence[float]) -> bool:
        """Move the region (the model is kept: the next presses pull towards the new box);
        False and a message when the box is refused."""
        with shown_errors(self.message) as outcome:
            box = checked_box(low, high, self.margin)
        if not outcome.ok:
            self._sync_ranges()
            return show_rejected(self.message, outcome.error, "The box is unchanged")
        self.box = box
        self._sync_ranges()  # the controls first, then the picture
        self._draw()
        return True

    def finetune(self, steps: Any = 5) -> bool:
        """Run ``steps`` (a whole number 1..MAX_STEPS_PER_PRESS) adjoint fine-tuning steps
        towards the box and redraw; a non-finite loss or weight restores the weights (and the
        optimizer) of before the call (False, message)."""
        with shown_errors(self.message) as outcome:
            ok = isinstance(steps, numbers.Integral) and not isinstance(steps, bool)
            if not (ok and 1 <= steps <= MAX_STEPS_PER_PRESS):
                raise ValueError(
                    f"steps per press must be a whole number 1..{MAX_STEPS_PER_PRESS}, "
                    f"got {steps!r}"
                )
            if self.optimizer is None:
                self.optimizer = torch.optim.Adam(self.flow.trainable(), lr=self.lr)
            saved = copy.deepcopy(self.flow.eps_model.state_dict())
            saved_opt = copy.deepcopy(self.optimizer.state_dict())
            goal = lambda x: ad.distance_to_box(x, *self.goal_box)  # noqa: E731
            start, losses = time.perf_counter(), []
            with single_threaded():
                for _ in range(int(steps)):
                    x_T = torch.randn(self.batch, 2, generator=self._gen)
                    nfe = self.flow.nfe
                    out = ad.finetune_step(self.flow, x_T, self.grid, goal, self.optimizer,
                                           "adjoint", self.method)  # fmt: skip
                    self.nfe_per_step = self.flow.nfe - nfe
                    finite = all(bool(torch.isfinite(p).all()) for p in self.flow.trainable())
                    if not (math.isfinite(out.loss) and finite):
                        self.flow.eps_model.load_state_dict(saved)
                        self.optimizer.load_state_dict(saved_opt)
                        raise FloatingPointError(
                            "the goal loss or the weights became NaN/inf (learning rate too "
                            "large?): the weights of before this press are back"
                        )
                    losses.append(out.loss)
                with torch.no_grad():
                    self.now = ad.sample(self.flow, self._x_show, self.grid, self.method)
            self.seconds_per_press = time.perf_counter() - start
            self.losses.extend(losses)
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "The model is unchanged")
        self._draw()
        return True

    def reset(self) -> None:
        """Back to the pretrained weights (and a fresh optimizer)."""
        self.flow.eps_model.load_state_dict(self._base.state_dict())
        self.optimizer = None
        self.losses, self.now = [], self.before.clone()
        self._draw()

    # ---- drawing -------------------------------------------------------------------------
    def _sync_ranges(self) -> None:
        (x0, y0), (x1, y1) = self.box
        set_quietly(self, self.x_range, [x0, x1])
        set_quietly(self, self.y_range, [y0, y1])

    def _on_range(self, _change: dict) -> None:
        if not self._quiet:
            x, y = self.x_range.value, self.y_range.value
            self.set_box((x[0], y[0]), (x[1], y[1]))

    def _on_select(self, _trace: object, points: object, _selector: object) -> None:
        xs, ys = list(points.xs), list(points.ys)
        if not xs:
            return
        half = EXTENT / (GRID - 1)  # half a grid cell around the selected hit points
        self.set_box((min(xs) - half, min(ys) - half), (max(xs) + half, max(ys) + half))

    def _draw(self) -> None:
        steps = list(range(1, len(self.losses) + 1))
        with self.loss_figure.batch_update():
            line = self.loss_figure.data[0]
            line.x, line.y = steps, plain_floats(self.losses)
        with self.figure.batch_update():
            self.figure.data[1].x, self.figure.data[1].y = self.before[self._drawn].T.tolist()
            self.figure.data[2].x, self.figure.data[2].y = self.now[self._drawn].T.tolist()
            self.figure.data[3].x, self.figure.data[3].y = outline(*self.box)
            self.figure.data[4].x, self.figure.data[4].y = outline(*self.goal_box)
        before, now = self.share_in_box(self.before), self.share_in_box(self.now)
        n = len(self._x_show)
        drawn = drawing_note((len(self._drawn), n, "samples of each set"))
        run = (
            f"after {len(self.losses)} fine-tuning steps (adjoint gradients, {self.method} with "
            f"{len(self.grid) - 1} steps: {self.nfe_per_step} network evaluations per step; "
            f"last press {self.seconds_per_press:.2f} s)"
            if self.losses
            else "before fine-tuning: press Fine-tune"
        )
        self.readout.value = (
            f"in the box: <b>{before:.3f}</b> pretrained, <b>{now:.3f}</b> now ({n} samples, "
            f"the same noises), {run}. Drag a box on the plane to move the region."
            + (f" ({drawn}.)" if drawn else "")
        )
