"""Chapter 09's explorer: watch ARFlow's chunk sequence grow while it denoises one digit.

:class:`ARFlowExplorer` generates one sample of a class with K Euler steps (one chunk per
step, recurrent state) and steps through it: top, the chunks x_{t_0}, ..., x_{t_k} so far;
bottom left, how much of each chunk's attention output comes from each earlier chunk (its
share, averaged over layers: the diagonal is the softmax inside the chunk, the rest the
gated linear path across chunks); bottom right, the size of the recurrent state after each
step. Controls: the step (slider, Play), the class, the noise seed (a validated box).

Time convention: flow (t = 0 noise, t = 1 data), as :mod:`pflow_explore.ar_flow`.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from pflow_explore import ar_flow as af
from pflow_explore.scale import single_threaded
from pflow_explore.viz.images import image_grid
from pflow_explore.viz.style import BLUE, RED, TEMPLATE, line_style, marker_style
from pflow_explore.widgets.controls import (
    checked_choice,
    checked_index,
    send_values,
    set_quietly,
    try_setting,
)
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label
from pflow_explore.widgets.stepping import StepControls

MAX_SEED = 999


def checked_seed(seed: Any) -> int:
    """seed as an int in [0, MAX_SEED] (not a bool, not text); ValueError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, float, np.integer)):
        raise ValueError(f"noise seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return checked_index(seed, MAX_SEED, "noise seed")


class ARFlowExplorer(StepControls, widgets.VBox):
    """model: a trained :class:`~pflow_explore.nets.hybrid_attention.ARFlowTransformer`;
    n_steps: K, the Euler steps (chunks) of one generation. The first picture is step
    ``step`` (not the last, so the slider can move right)."""

    def __init__(self, model: torch.nn.Module, n_steps: int = 20, label: int = 3, seed: int = 0,
                 step: int = 3) -> None:  # fmt: skip
        self.model, self.K = model.eval(), int(n_steps)
        self.n_steps, self._step = self.K, min(int(step), self.K - 1)
        self.label, self.seed, self._quiet = int(label), checked_seed(seed), False
        self.message = message_label()
        self._compute()
        fig = make_subplots(2, 2, specs=[[{"colspan": 2}, None], [{}, {}]], row_heights=[0.3, 0.7],
                            vertical_spacing=0.12, horizontal_spacing=0.12,
                            subplot_titles=("chunks so far (x at t_0 ... t_k)",
                                            "share of chunk c's attention output from chunk e",
                                            "recurrent state size after each step"))  # fmt: skip
        fig.add_trace(go.Image(z=self._strip(self._step), hoverinfo="skip"), 1, 1)
        fig.add_trace(go.Heatmap(z=self._shares(self._step), colorscale="Blues", zmin=0, zmax=1,
                                 colorbar=dict(len=0.6, y=0.3)), 2, 1)  # fmt: skip
        steps = list(range(1, self.K + 1))
        fig.add_trace(go.Scatter(x=steps, y=self.norms, name="|S|", **line_style(BLUE, 2)), 2, 2)
        fig.add_trace(go.Scatter(name="now", **marker_style(RED, 11)), 2, 2)
        fig.update_xaxes(visible=False, row=1, col=1)
        fig.update_yaxes(visible=False, row=1, col=1)
        fig.update_xaxes(title_text="source chunk e", row=2, col=1)
        fig.update_yaxes(title_text="chunk c", autorange="reversed", row=2, col=1)
        fig.update_xaxes(title_text="step", row=2, col=2)
        fig.update_yaxes(title_text="RMS Frobenius norm of S", row=2, col=2)
        fig.update_layout(template=TEMPLATE, height=560, width=980, showlegend=False,
                          margin=dict(l=50, r=20, t=40, b=40))  # fmt: skip
        self._draw_now(fig, self._step)
        self.figure: go.Figure = fig  # plain until the first picture is in it (below)
        row = self.step_row(400, noun="step", value=self._step)
        self.time_label.value = f"t = {self._step / self.K:.2f}"
        self.class_menu = widgets.Dropdown(options=list(range(10)), value=self.label,
                                           description="digit")  # fmt: skip
        self.seed_box = widgets.IntText(value=self.seed, description="noise seed",
                                        layout={"width": "190px"})  # fmt: skip
        self.seed_box.add_class("pflow-input")  # validated: the browser test types -1 here
        send_values(self, self.set_label, self.class_menu)
        send_values(self, self.set_seed, self.seed_box)
        self.readout = widgets.HTML(self._readout())
        self.figure = LiveFigure(fig)
        controls = widgets.HBox([self.class_menu, self.seed_box])
        super().__init__([row, controls, self.message, self.figure, self.readout])

    # --- computing ----------------------------------------------------------------------
    def _compute(self) -> None:
        """Generate (recurrent form) and measure the contributions (parallel form)."""
        d = self.model.channels * self.model.image_size**2
        z = torch.randn(1, d, generator=torch.Generator().manual_seed(self.seed))
        y = torch.tensor([self.label])
        with torch.no_grad(), single_threaded():
            gen = af.generate(self.model, z, y, self.K, trajectory=True)
            seq = gen.chunks[: self.K].transpose(0, 1)  # (1, K, d): the chunks the model read
            contrib = self.model.chunk_contributions(seq, gen.times[: self.K][None], y)
        share = contrib.mean(0)[0]  # (K, K), averaged over layers
        self.shares = (share / share.sum(1, keepdim=True).clamp_min(1e-12)).numpy()
        self.chunks, self.norms = gen.chunks[:, 0], list(gen.state_norms)
        s = self.model.image_size
        self.images = self.chunks.clamp(-1, 1).reshape(-1, 1, s, s).numpy()

    def _strip(self, k: int) -> np.ndarray:
        shown = self.images.copy()
        shown[k + 1 :] = 1.0  # chunks not generated yet: blank (white) tiles
        return image_grid(shown, nrow=self.K + 1, padding=1)

    def _shares(self, k: int) -> list[list[float | None]]:
        """Rows of the chunks read so far (0..k-1); None elsewhere (plotly: no cell)."""
        return [[float(self.shares[c, e]) if c < k and e <= c else None for e in range(self.K)]
                for c in range(self.K)]  # fmt: skip

    def _draw_now(self, fig: go.Figure, k: int) -> None:
        fig.data[3].x, fig.data[3].y = ([k], [self.norms[k - 1]]) if k >= 1 else ([], [])

    def _readout(self) -> str:
        k = self._step
        if k == 0:
            return f"step 0 / {self.K}: pure noise, the state is empty (S = 0)."
        back = float(1 - self.shares[k - 1, k - 1])
        return (f"step {k} / {self.K}, t = {k / self.K:.2f}: chunk {k - 1} took "
                f"{100 * back:.0f}% of its attention output from earlier chunks; state size "
                f"{self.norms[k - 1]:.2f} (a fixed {self.model.attn[0].dh}x"
                f"{self.model.attn[0].dh} matrix per head, whatever k).")  # fmt: skip

    # --- controls ------------------------------------------------------------------------
    def _show_step(self, i: int) -> None:
        with self.figure.batch_update():
            self.figure.data[0].z = self._strip(i)
            self.figure.data[1].z = self._shares(i)
            self._draw_now(self.figure, i)
        self.time_label.value = f"t = {i / self.K:.2f}"
        self.readout.value = self._readout()

    def _redraw(self) -> None:
        set_quietly(self, self.class_menu, self.label)
        set_quietly(self, self.seed_box, self.seed)
        with self.figure.batch_update():
            self.figure.data[2].y = self.norms
        self._show_step(self._step)

    def set_label(self, label: Any) -> bool:
        """Generate a digit of class ``label`` (0..9)."""
        digit = lambda: int(checked_choice(label, range(10), "digit", "0..9"))
        return try_setting(self, "label", digit, self.class_menu, "Showing the previous digit",
                           compute=self._compute, redraw=self._redraw)  # fmt: skip

    def set_seed(self, seed: Any) -> bool:
        """Start from the noise of ``seed`` (an integer in [0, MAX_SEED])."""
        return try_setting(self, "seed", lambda: checked_seed(seed), self.seed_box,
                           "Showing the previous sample", compute=self._compute,
                           redraw=self._redraw)  # fmt: skip
