"""Chapter 08's explorer: edit a few corrupted digits with CODE and SDEdit, live.

:class:`CodeExplorer` corrupts a handful of held-out digits (corruption type and strength),
edits them with CODE (level t_L, Langevin steps K, step scale, clipping eta) and SDEdit (the
same t_L), and shows clean / corrupted / CODE / SDEdit side by side, next to the chapter's
measured trade-off (distance to the input against distance to the clean digit, every edit
of the cached run for that corruption) with the current setting marked by two stars.

Time convention: diffusion (t = 0 data, t = 1 noise), VP-linear path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from pflow_explore import editing, paths
from pflow_explore.datasets.corruptions import CORRUPTIONS, corrupt
from pflow_explore.scale import single_threaded
from pflow_explore.viz.arrays import plain_floats
from pflow_explore.viz.code_figures import METHOD_COLORS
from pflow_explore.viz.style import TEMPLATE, marker_style
from pflow_explore.widgets.controls import checked_number, put_back, quietly, set_quietly
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label, show_rejected, shown_errors

MAX_K = 64
SHOWN = 6  # digits in the picture (the live distances use all the explorer's digits)


def rms(a: Tensor, b: Tensor) -> float:
    """Mean over rows of the RMS per-pixel distance."""
    return float((a - b).pow(2).mean(1).sqrt().mean())


def checked_setting(strength: Any, t_L: Any, k: Any, step: Any, eta: Any) -> tuple:
    """Validated (strength, t_L, K, step, eta); ValueError with the reason otherwise."""
    strength = checked_number(strength, "strength", 0.0)
    if strength > 1:
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    t_L = checked_number(t_L, "t_L", 0.01, above=True)
    if t_L > 0.9:
        raise ValueError(f"t_L must be in (0.01, 0.9], got {t_L!r}")
    if isinstance(k, bool) or int(k) != k or not 0 <= k <= MAX_K:
        raise ValueError(f"K must be a whole number in [0, {MAX_K}], got {k!r}")
    step = checked_number(step, "step scale", 0.0, above=True)
    if step >= 1:
        raise ValueError(f"step scale must be in (0, 1) (larger steps are unstable), got {step!r}")
    eta = checked_number(eta, "eta", 0.0)
    return strength, t_L, int(k), step, eta


class CodeExplorer(widgets.VBox):
    """model: the eps-model eps(x (n, 64), t); clean: held-out digits (n, 64) in [-1, 1];
    rows: corruption -> the chapter's table of edits (``DigitsResult.rows``), drawn as the
    measured trade-off; ode_steps: DDIM steps. The eta box (CSS class ``pflow-input``)
    takes any number >= 0; bad input keeps the picture and says why."""

    def __init__(
        self,
        model: Callable[[Tensor, Tensor], Tensor],
        clean: Tensor,
        rows: Mapping[str, Mapping[str, list]],
        ode_steps: int = 16,
        strength: float = 0.6,
        t_L: float = 0.2,
        k: int = 16,
        step: float = 0.2,
        eta: float = 2.0,
        path: str = "vp_linear",
        seed: int = 0,
    ) -> None:
        self.model, self.clean, self.rows = model, clean.float(), dict(rows)
        self.ode_steps, self.path, self.seed = ode_steps, paths.get_path(path), seed
        self.kind = next(iter(self.rows)) if self.rows else CORRUPTIONS[0]
        self.state = (strength, t_L, k, step, eta)
        self._quiet = False
        fig = make_subplots(
            1,
            2,
            column_widths=[0.5, 0.5],
            horizontal_spacing=0.1,
            subplot_titles=("clean / corrupted / CODE / SDEdit", "distance to input vs to clean"),
        )
        fig.add_trace(
            go.Heatmap(
                z=[[0.0]], colorscale="gray_r", zmin=-1, zmax=1, showscale=False, hoverinfo="skip"
            ),
            1,
            1,
        )
        for m, c in METHOD_COLORS.items():
            measured = marker_style(c, 6, opacity=0.6)
            fig.add_trace(go.Scatter(x=[], y=[], name=f"{m} (measured)", **measured), 1, 2)
        outline = dict(color="black", width=1)
        for m in ("CODE", "SDEdit"):
            now = marker_style(METHOD_COLORS[m], 16, symbol="star", line=outline)
            fig.add_trace(go.Scatter(x=[], y=[], name=f"{m} now", **now), 1, 2)
        fig.update_xaxes(visible=False, row=1, col=1)
        fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", row=1, col=1)
        fig.update_xaxes(title_text="RMS to the corrupted input", row=1, col=2)
        fig.update_yaxes(title_text="RMS to the clean digit", row=1, col=2)
        fig.update_layout(
            template=TEMPLATE, height=430, width=1000, legend=dict(orientation="h", y=-0.2)
        )
        self.figure: go.Figure = fig
        self.strength = widgets.FloatSlider(
            value=strength, min=0, max=1, step=0.1, description="strength"
        )
        self.corruption = widgets.Dropdown(
            options=list(CORRUPTIONS), value=self.kind, description="corruption"
        )
        self.level = widgets.FloatSlider(value=t_L, min=0.05, max=0.8, step=0.05, description="t_L")
        self.k_slider = widgets.IntSlider(value=k, min=0, max=MAX_K, description="K")
        self.step = widgets.FloatSlider(
            value=step, min=0.02, max=0.8, step=0.02, description="step"
        )
        self.clip = widgets.Checkbox(value=True, description="clip")
        self.eta = widgets.FloatText(value=eta, description="eta =", layout={"width": "170px"})
        self.eta.add_class("pflow-input")  # validated: the browser test types -1 here
        self.message, self.readout = message_label(), widgets.HTML()
        for c in (self.strength, self.level, self.k_slider, self.step, self.eta, self.clip):
            c.observe(self._changed, names="value")
        self.corruption.observe(self._changed, names="value")
        self.update()
        self.figure = LiveFigure(fig)
        super().__init__(
            [
                widgets.HBox([self.strength, self.corruption]),
                widgets.HBox([self.level, self.k_slider, self.step]),
                widgets.HBox([self.eta, self.clip]),
                self.message,
                self.figure,
                self.readout,
            ]
        )

    def _changed(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self.update()

    def edit(
        self, kind: str, strength: float, t_L: float, k: int, step: float, eta: float | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(corrupted, CODE, SDEdit) of the explorer's digits, each (n, 64)."""
        gen = torch.Generator().manual_seed(self.seed)
        y = corrupt(self.clean.reshape(-1, 1, 8, 8), kind, strength, gen).flatten(1)
        with single_threaded():
            code = editing.code_edit(
                self.model, self.path, y, t_L, k, step, self.ode_steps, gen, eta
            ).x0
            sde = editing.sdedit(self.model, self.path, y, t_L, self.ode_steps, gen)
        return y, code, sde

    def set(self, **values: Any) -> bool:
        """Set any of strength, corruption, t_L, K, step, eta, clip, then redraw; False and
        a message (the previous picture stays) when a value is bad."""
        names = dict(
            strength=self.strength,
            corruption=self.corruption,
            t_L=self.level,
            K=self.k_slider,
            step=self.step,
            eta=self.eta,
            clip=self.clip,
        )
        unknown = set(values) - set(names)
        if unknown:
            raise TypeError(f"unknown controls {sorted(unknown)}")
        with quietly(self):
            for name, v in values.items():
                if name in ("eta", "K", "strength", "t_L", "step") and not isinstance(
                    v, (int, float)
                ):
                    return show_rejected(
                        self.message,
                        f"{name} must be a number, got {v!r}",
                        "Showing the previous edit",
                    )
                names[name].value = v
        return self.update()

    def update(self) -> bool:
        """Read the controls, edit, redraw (the controls first, then the picture)."""
        with shown_errors(self.message) as outcome:
            st, t_L, k, step, eta = checked_setting(
                self.strength.value,
                self.level.value,
                self.k_slider.value,
                self.step.value,
                self.eta.value,
            )
            kind = self.corruption.value
            y, code, sde = self.edit(kind, st, t_L, k, step, eta if self.clip.value else None)
        if not outcome.ok:
            return put_back(
                self, self.eta, self.state[4], outcome.error, "Showing the previous edit"
            )
        self.kind, self.state = kind, (st, t_L, k, step, eta)
        set_quietly(self, self.eta, eta)
        n = min(SHOWN, len(self.clean))
        tiles = [x[:n].clamp(-1, 1).reshape(n, 8, 8) for x in (self.clean, y, code, sde)]
        pad = lambda t: torch.nn.functional.pad(t, (1, 1, 1, 1), value=-1)  # noqa: E731
        grid = torch.cat([torch.cat(list(pad(t)), dim=1) for t in tiles], dim=0)
        z = np.round(grid.numpy().astype(float), 3).tolist()
        pts = {
            m: (rms(x.clamp(-1, 1), y), rms(x.clamp(-1, 1), self.clean))
            for m, x in (("CODE", code), ("SDEdit", sde))
        }
        rows = self.rows.get(kind, {})
        data = self.figure.data
        with self.figure.batch_update():
            data[0].z = z
            for i, m in enumerate(METHOD_COLORS, start=1):
                idx = [j for j, v in enumerate(rows.get("method", [])) if v == m]
                data[i].x = plain_floats([rows["to_input"][j] for j in idx])
                data[i].y = plain_floats([rows["to_clean"][j] for j in idx])
            for i, m in enumerate(("CODE", "SDEdit"), start=len(METHOD_COLORS) + 1):
                data[i].x, data[i].y = [pts[m][0]], [pts[m][1]]
        clip = f"eta {eta:g}" if self.clip.value else "off"
        measured = "" if rows else " (no measured run for this corruption)"
        self.readout.value = (
            f"<b>{kind}</b> at strength {st:g}; t_L {t_L:g}, K {k}, step {step:g}, clipping {clip}"
            f"{measured}. {len(self.clean)} digits: CODE {pts['CODE'][0]:.3f} to input, "
            f"{pts['CODE'][1]:.3f} to clean; SDEdit {pts['SDEdit'][0]:.3f} / "
            f"{pts['SDEdit'][1]:.3f}. "
            "The measured points are the chapter's run at its own strength."
        )
        return True
