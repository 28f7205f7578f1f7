"""Chapter 07's security audit, step by step: watch the noise x_T move until a classifier
changes its mind about the image the model makes from it.

:class:`AttackStepper` samples ``n_images`` digits from noise with a trained eps-model, labels
them with a classifier, and runs the audit of :func:`adjoint.noise_attack_step` live: Adam on
x_T, the Carlini-Wagner margin of each image's own label plus ``proximity`` x the squared
distance of x_T to its start, gradients by the adjoint. Iterations are computed when first
shown (scrubbing or playing forward computes them; back is instant). The top row is the
sample from the original noise, the middle row the sample from x_T after i iterations (its
label and the classifier's probability above it), the bottom row the change, doubled; the
chart is each image's margin (own logit minus the best other: below 0 the decision has
changed). Moving the learning rate or the proximity weight starts the audit again.

Time convention: diffusion (t = 0 data); the sampler runs in rho = sigma / alpha from rho_T
down to 0 on ``grid``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from pflow_explore import adjoint as ad
from pflow_explore import paths
from pflow_explore.scale import single_threaded
from pflow_explore.viz.images import image_grid, image_grid_figure
from pflow_explore.viz.style import TEMPLATE
from pflow_explore.widgets.controls import checked_number
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label, show_rejected, shown_errors
from pflow_explore.widgets.stepping import StepControls

TILE_PX = 64  # screen pixels per image tile


def own_margins(logits: Tensor, labels: Tensor) -> Tensor:
    """(n,): logit of each row's label minus the largest other logit (< 0: changed)."""
    own = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return own - others.max(1).values


class AttackStepper(StepControls, widgets.VBox):
    """model: a trained eps-model of flat images, ``model(x (n, S*S), t (n,))``; path: its
    noise path; grid: its sampler's rho grid; classify: flat images (n, S*S) -> logits
    (n, K); image_size: S; n_images: how many samples are audited; iters: the last
    iteration; lr, proximity, kappa: the audit's Adam rate, the weight of staying near the
    start noise and the margin asked for (:func:`adjoint.noise_attack_step`,
    :func:`adjoint.margin_loss`); seed: the start noises."""

    step_noun = "iteration"

    def __init__(
        self,
        model: nn.Module,
        path: paths.Path,
        grid: Tensor,
        classify: Callable[[Tensor], Tensor],
        image_size: int,
        method: str = "rk4",
        n_images: int = 8,
        iters: int = 25,
        lr: float = 0.1,
        proximity: float = 1.0,
        kappa: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.flow = ad.RhoFlow(copy.deepcopy(model).eval(), path)  # the caller's is untouched
        for p in self.flow.trainable():
            p.requires_grad_(False)  # only x_T moves
        self.grid, self.method, self.classify = ad.check_grid(grid), method, classify
        self.size, self.iters, self.kappa = int(image_size), int(iters), float(kappa)
        self.lr, self.proximity = float(lr), float(proximity)
        d = self.size**2
        self.start = torch.randn(n_images, d, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad(), single_threaded():
            self.before = ad.sample(self.flow, self.start, self.grid, method)
            self.labels = classify(self.before).argmax(1)
        self._step, self._quiet = 0, False
        self.message, self.readout = message_label(), widgets.HTML()
        self._restart()
        tiles = self._tiles(0)
        self.image_figure: go.Figure = image_grid_figure(
            tiles, nrow=n_images, titles=self._titles(0), tile_px=TILE_PX
        )
        margins = go.Figure(layout=dict(template=TEMPLATE, height=300, width=520))
        for k in range(n_images):
            margins.add_trace(go.Scatter(mode="lines", name=f"image {k}", showlegend=False))
        margins.add_trace(go.Scatter(mode="markers", marker=dict(size=8, color="#444")))
        margins.add_hline(y=0, line=dict(color="#d62728", dash="dot"))
        margins.update_layout(
            title="margin of the own label (< 0: decision changed)",
            xaxis_title="iteration",
            showlegend=False,
            margin=dict(l=50, r=10, t=40, b=40),
        )
        self.margin_figure: go.Figure = margins
        row = self.step_row(300, noun="iteration", last=self.iters)
        log = dict(base=10, readout_format=".2g", style={"description_width": "initial"})
        self.lr_slider = widgets.FloatLogSlider(
            value=self.lr, min=-2.5, max=0, description="Adam rate", **log
        )
        self.proximity_slider = widgets.FloatLogSlider(
            value=self.proximity, min=-2, max=2, description="proximity", **log
        )
        for control in (self.lr_slider, self.proximity_slider):
            control.observe(self._on_setting, names="value")
        self._show_step(0)  # into the plain figures: what changes before display is lost
        self.image_figure = LiveFigure(self.image_figure)
        self.margin_figure = LiveFigure(margins)
        super().__init__(
            [
                row,
                widgets.HBox([self.lr_slider, self.proximity_slider]),
                self.message,
                widgets.HBox([self.image_figure, self.margin_figure]),
                self.readout,
            ]
        )

    @property
    def n_steps(self) -> int:
        """The last iteration index."""
        return self.iters

    @property
    def computed(self) -> int:
        """Iterations computed so far (0 .. iters)."""
        return len(self._x_T) - 1

    # ---- the audit -----------------------------------------------------------------------
    def _restart(self) -> None:
        self._leaf = self.start.clone().requires_grad_(True)
        # made at the first iteration, as RegionFinetuner's: a first optimizer costs 1.1 s
        self.optimizer: torch.optim.Optimizer | None = None
        self._x_T, self._images = [self.start.clone()], [self.before]
        with torch.no_grad():
            logits = self.classify(self.before)
        self._logits = [logits]

    def _objective(self, x: Tensor) -> Tensor:
        return ad.margin_loss(self.classify(x), self.labels, kappa=self.kappa)

    def compute_to(self, i: int) -> None:
        """Run the audit until iteration i is known (one adjoint gradient per iteration)."""
        with single_threaded():
            while self.computed < i:
                if self.optimizer is None:
                    self.optimizer = torch.optim.Adam([self._leaf], lr=self.lr)
                args = (self.optimizer, self.start, self.proximity, "adjoint", self.method)
                ad.noise_attack_step(self.flow, self._leaf, self.grid, self._objective, *args)
                with torch.no_grad():
                    image = ad.sample(self.flow, self._leaf.detach(), self.grid, self.method)
                    self._logits.append(self.classify(image))
                self._x_T.append(self._leaf.detach().clone())
                self._images.append(image)

    def set_rates(self, lr: Any = None, proximity: Any = None) -> bool:
        """New Adam rate and/or proximity weight (> 0, finite): the audit starts again from
        the original noises, at the iteration shown. False and a message otherwise."""
        with shown_errors(self.message) as outcome:
            lr = self.lr if lr is None else checked_number(lr, "the Adam rate", 0, above=True)
            if proximity is not None:
                proximity = checked_number(proximity, "the proximity weight", 0)
            proximity = self.proximity if proximity is None else proximity
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "The audit is unchanged")
        self.lr, self.proximity = lr, proximity
        self._restart()
        self.step_to(self._step)
        return True

    def _on_setting(self, _change: dict) -> None:
        if not self._quiet:
            self.set_rates(self.lr_slider.value, self.proximity_slider.value)

    # ---- drawing -------------------------------------------------------------------------
    def _tiles(self, i: int) -> Tensor:
        now, before = self._images[i].clamp(-1, 1), self.before.clamp(-1, 1)
        change = (2 * (now - before)).clamp(-1, 1)
        return torch.cat([before, now, change]).reshape(-1, 1, self.size, self.size)

    def _titles(self, i: int) -> list[str]:
        probs = torch.softmax(self._logits[i], 1)
        new = probs.argmax(1)
        p0 = torch.softmax(self._logits[0], 1)
        top = [f"{int(c)} ({float(p0[k, c]):.2f})" for k, c in enumerate(self.labels)]
        mid = [
            f"{'→' if int(c) != int(self.labels[k]) else '='}{int(c)} ({float(probs[k, c]):.2f})"
            for k, c in enumerate(new)
        ]
        return top + mid + ["change x2"] * len(new)

    def _show_step(self, i: int) -> None:
        self.compute_to(i)
        tiles, titles = self._tiles(i), self._titles(i)
        with self.image_figure.batch_update():
            self.image_figure.data[0].z = image_grid(
                tiles, nrow=len(self.start), padding=2, top=math.ceil(14 * self.size / TILE_PX)
            )  # the title rows image_grid_figure leaves above each tile
            for note, text in zip(self.image_figure.layout.annotations, titles, strict=True):
                note.text = text
        margins = torch.stack([own_margins(z, self.labels) for z in self._logits]).T.tolist()
        xs = list(range(self.computed + 1))
        with self.margin_figure.batch_update():
            for k, ys in enumerate(margins):
                self.margin_figure.data[k].x, self.margin_figure.data[k].y = xs, ys
            here = [row[i] for row in margins]
            self.margin_figure.data[-1].x, self.margin_figure.data[-1].y = [i] * len(here), here
        changed = int((self._logits[i].argmax(1) != self.labels).sum())
        moved = float((self._x_T[i] - self.start).pow(2).mean().sqrt())
        rms = float(self.start.pow(2).mean().sqrt())
        self.time_label.value = f"{changed} / {len(self.start)} changed"
        self.readout.value = (
            f"iteration {i}: decisions changed for <b>{changed} of {len(self.start)}</b> "
            f"images; x_T moved {moved / rms:.3f} of its RMS (Adam rate {self.lr:.2g}, "
            f"proximity {self.proximity:.2g}). Top: from the original noise; middle: now; "
            f"bottom: the change, doubled."
        )
