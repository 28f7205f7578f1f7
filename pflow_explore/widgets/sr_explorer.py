"""Chapter 06's explorer: pick an image, degrade it, super-resolve it with every model, and
compare side by side.

:class:`SRExplorer` shows one row: the truth, the low-resolution observation (drawn at the
high resolution, pixel blocks), the upsampled input LRup, each one-step model's output, and
the multi-step diffusion baseline at the NFE of the slider; below, each panel's PSNR and
sharpness ratio. The image index is typed into a validated box, the noise seed (the
degradation's noise and the one-step models' z) is a slider.

Time convention: diffusion, t in [0, 1] as in :mod:`pflow_explore.super_resolution` (t = 1
the noisy LRup); the diffusion baseline counts network evaluations (NFE), not times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor

from pflow_explore import super_resolution as sr
from pflow_explore.metrics import psnr
from pflow_explore.scale import single_threaded
from pflow_explore.viz.images import image_grid
from pflow_explore.viz.style import TEMPLATE
from pflow_explore.widgets.controls import (
    checked_choice,
    checked_index,
    send_values,
    set_quietly,
    try_setting,
)
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label

# label -> f(lr_up (1, d), generator) -> HR estimate (1, d): a one-step model or a baseline
OneStep = Callable[[Tensor, torch.Generator], Tensor]
# f(lr_up (1, d), nfe, generator) -> HR estimate (1, d): the multi-step baseline
MultiStep = Callable[[Tensor, int, torch.Generator], Tensor]
MAX_SEED = 20


def checked_integer(value: Any, last: int, name: str) -> int:
    """value as an int if it is a whole number in [0, last] (not a bool, not text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer)):
        raise ValueError(f"{name} must be an integer in [0, {last}], got {value!r}")
    return checked_index(value, last, name)


class SRExplorer(widgets.VBox):
    """hr: held-out HR images (N, C, H, W) in [-1, 1]; degradation: how each is degraded
    (fresh noise per seed); one_step: label -> model call (:data:`OneStep`); multi_step: the
    diffusion baseline (:data:`MultiStep`) with its NFE choices ``nfe_options`` (odd, for
    Heun; the second largest is shown first). Controls, in page order: the NFE slider (it
    changes the diffusion panel), the
    noise-seed slider, the image-index box (CSS class ``pflow-input``, an integer in
    [0, N - 1]); bad input leaves the picture and says why."""

    def __init__(
        self,
        hr: Tensor,
        degradation: sr.SRDegradation,
        one_step: Mapping[str, OneStep],
        multi_step: MultiStep,
        nfe_options: Sequence[int] = (1, 3, 5, 9, 19),
        index: int = 0,
        nfe: int | None = None,
    ) -> None:
        if hr.dim() != 4 or len(hr) < 1:
            raise ValueError(f"hr must be an image batch (N, C, H, W), got {tuple(hr.shape)}")
        self.hr, self.degradation = hr.detach().float().cpu(), degradation
        self.one_step, self.multi_step = dict(one_step), multi_step
        self.nfe_options = sorted(int(n) for n in nfe_options)
        self.index, self.seed = checked_index(index, len(hr) - 1, "image index"), 0
        # not the last option: the slider must be able to move right (a reader, the browser test)
        default = self.nfe_options[-2] if len(self.nfe_options) > 1 else self.nfe_options[0]
        self.nfe = default if nfe is None else int(nfe)
        self._quiet, self._cache = False, {}  # (panel, index, seed[, nfe]) -> output
        self.labels = ["truth", "low-res y", "LRup", *self.one_step, "diffusion"]
        fig = go.Figure(go.Image(z=self._picture(), hoverinfo="skip"))
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        h, w = fig.data[0].z.shape[:2]
        scale = max(1, min(980 // w, 400 // h))
        fig.update_layout(template=TEMPLATE, width=w * scale + 40, height=h * scale + 70,
                          margin=dict(l=10, r=10, t=50, b=10), title=self._title())  # fmt: skip
        self.figure: go.Figure = fig  # plain until the first picture is in it (LiveFigure below)
        self.nfe_slider = widgets.SelectionSlider(
            options=self.nfe_options, value=self.nfe, description="diffusion NFE"
        )
        self.seed_slider = widgets.IntSlider(value=0, min=0, max=MAX_SEED, description="noise seed")
        self.index_box = widgets.IntText(value=self.index, description="image #",
                                         layout={"width": "170px"})  # fmt: skip
        self.index_box.add_class("pflow-input")  # validated: the browser test types -1 here
        self.message, self.readout = message_label(), widgets.HTML(self._readout())
        send_values(self, self.set_nfe, self.nfe_slider)
        send_values(self, self.set_seed, self.seed_slider)
        send_values(self, self.set_index, self.index_box)
        self.figure = LiveFigure(fig)
        row = widgets.HBox([self.nfe_slider, self.seed_slider, self.index_box])
        super().__init__([row, self.message, self.figure, self.readout])

    # --- computing ----------------------------------------------------------------------
    def _inputs(self) -> tuple[Tensor, Tensor, Tensor]:
        """(HR (1, C, H, W), y upsampled by pixel blocks for display, LRup) for index, seed."""
        x = self.hr[self.index : self.index + 1]
        y = self.degradation(x, torch.Generator().manual_seed(self.seed))
        f = self.degradation.factor
        blocks = y.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
        return x, blocks, self.degradation.lr_up(y)

    def outputs(self) -> list[Tensor]:
        """The row's panels (each (1, C, H, W), clamped to [-1, 1]) in :attr:`labels` order."""
        x, blocks, lr_up = self._inputs()
        flat, shape = lr_up.flatten(1), x.shape
        panels = [x, blocks, lr_up]
        with torch.no_grad(), single_threaded():
            for label, call in self.one_step.items():
                key = (label, self.index, self.seed)
                if key not in self._cache:
                    self._cache[key] = call(flat, torch.Generator().manual_seed(self.seed))
                panels.append(self._cache[key].reshape(shape))
            key = ("diffusion", self.index, self.seed, self.nfe)
            if key not in self._cache:
                gen = torch.Generator().manual_seed(self.seed)
                self._cache[key] = self.multi_step(flat, self.nfe, gen)
            panels.append(self._cache[key].reshape(shape))
        return [p.clamp(-1, 1) for p in panels]

    def _picture(self) -> np.ndarray:
        return image_grid(torch.cat(self.outputs()).numpy(), nrow=len(self.labels), padding=1)

    def _title(self) -> str:
        return (f"image {self.index}, seed {self.seed}: " + " | ".join(self.labels[:-1])
                + f" | diffusion, {self.nfe} NFE")  # fmt: skip

    def _readout(self) -> str:
        panels = self.outputs()
        truth, cells = panels[0], []
        for label, p in zip(self.labels[1:], panels[1:], strict=True):
            sharp = float(sr.sharpness_ratio(p, truth)) if label != "low-res y" else float("nan")
            text = f"{float(psnr(p, truth)[0]):.1f} dB" + (
                f", sharpness {sharp:.2f}" if np.isfinite(sharp) else ""
            )
            cells.append(f"<td style='padding:0 8px'><b>{label}</b><br>{text}</td>")
        return f"<table><tr>{''.join(cells)}</tr></table>"

    # --- controls ------------------------------------------------------------------------
    def _redraw(self) -> None:
        self._sync_controls()  # the controls first, then the picture
        picture, title, readout = self._picture(), self._title(), self._readout()
        with self.figure.batch_update():
            self.figure.data[0].z = picture
            self.figure.layout.title = title
        self.readout.value = readout

    def _set(self, name: str, check: Callable[[], Any], control: widgets.ValueWidget) -> bool:
        """The setters' one path (:func:`try_setting`): the panels are computed at the new
        setting before anything is drawn; bad input keeps the previous picture."""
        keeps = "Showing the previous picture"
        return try_setting(self, name, check, control, keeps, compute=self.outputs,
                           redraw=self._redraw)  # fmt: skip

    def set_nfe(self, nfe: Any) -> bool:
        """Run the diffusion baseline with ``nfe`` evaluations (one of ``nfe_options``)."""
        return self._set("nfe", lambda: int(checked_choice(nfe, self.nfe_options, "NFE")),
                         self.nfe_slider)  # fmt: skip

    def set_seed(self, seed: Any) -> bool:
        """Redraw the degradation noise and the models' z from ``seed`` (0..MAX_SEED)."""
        return self._set("seed", lambda: checked_integer(seed, MAX_SEED, "noise seed"),
                         self.seed_slider)  # fmt: skip

    def set_index(self, index: Any) -> bool:
        """Show held-out image ``index`` (an integer in [0, N - 1])."""
        last = len(self.hr) - 1
        return self._set("index", lambda: checked_integer(index, last, "image index"),
                         self.index_box)  # fmt: skip

    def _sync_controls(self) -> None:
        set_quietly(self, self.nfe_slider, self.nfe)
        set_quietly(self, self.seed_slider, self.seed)
        set_quietly(self, self.index_box, self.index)
