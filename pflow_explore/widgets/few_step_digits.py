"""Digits from noise in 1, 2, 4, 8 steps: teacher vs reflowed vs distilled models (docs/papers.md
§03).

The widget takes samplers, not networks: the chapter wraps each model (the guided 1-RF
teacher, 2-RF, the distilled one-step students) as

    sample(n_steps, guidance, z0, labels) -> images

with z0 (n, 1, H, W) or (n, d) noise, labels (n,) class indices, and images in [-1, 1]
shaped (n, 1, H, W) or (n, d) (final samples only) or (n_steps + 1, n, 1, H, W) /
(n_steps + 1, n, d) (the whole trajectory, noise first: then the second slider steps
through it). The same z0 and labels are used for every model, steps and guidance scale, so
the pictures differ only by the sampler. Results are cached per (model, steps, guidance).

Guidance is classifier-free guidance's alpha, v = v(.|empty) + alpha (v(.|c) - v(.|empty))
(docs/papers.md); a model that ignores it (a distilled student) may just not use it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from torch import Tensor

from pflow_explore.scale import single_threaded
from pflow_explore.viz.arrays import as_numpy
from pflow_explore.viz.images import image_grid, image_grid_figure
from pflow_explore.widgets.controls import checked_number, quietly, send_values, shown
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label, show_rejected, shown_errors
from pflow_explore.widgets.reflow_explorer import step_counts
from pflow_explore.widgets.stepping import StepControls

Sampler = Callable[[int, float, Tensor, Tensor], Tensor]
Classifier = Callable[[Tensor], Tensor]


def _image_side(d: int, image_shape: tuple[int, int] | None) -> tuple[int, int]:
    if image_shape is not None:
        h, w = (int(s) for s in image_shape)
        if h * w != d:
            raise ValueError(f"image_shape {tuple(image_shape)} does not hold d = {d} pixels")
        return h, w
    side = math.isqrt(d)
    if side * side != d:
        raise ValueError(f"flat images (n, d) with d = {d} not a square: pass image_shape")
    return side, side


def sampled_states(
    out: Any, n_steps: int, n: int, image_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """A sampler's output as states (m, n, 1, H, W) float32 (m = 1: final images only).

    Accepted: (n, d) or (n, 1, H, W) final images; (n_steps + 1, n, d) or
    (n_steps + 1, n, 1, H, W) a trajectory, noise first. ValueError otherwise, or for
    NaN / infinite pixels.
    """
    x = as_numpy(out, "sampler output", np.float32)
    if x.ndim in (2, 4):
        x = x[None]
    if x.ndim not in (3, 5) or x.shape[1] != n or (x.shape[0] not in (1, n_steps + 1)):
        raise ValueError(
            f"a sampler must return images (n, d) or (n, 1, H, W), or a trajectory "
            f"(n_steps + 1, n, ...) = ({n_steps + 1}, {n}, ...); got {tuple(x.shape)}"
        )
    if x.ndim == 3:
        h, w = _image_side(x.shape[2], image_shape)
        x = x.reshape(x.shape[0], n, 1, h, w)
    if x.shape[2] != 1:
        raise ValueError(f"images must have one channel (gray), got {x.shape[2]}")
    if not np.isfinite(x).all():
        raise ValueError("the sampler returned NaN or infinite pixels (did it diverge?)")
    return x


def _guidance(value: Any) -> float:
    return checked_number(value, "guidance scale", 0.0)


class FewStepDigits(StepControls, widgets.VBox):
    """Samples of each model at 1, 2, 4, 8 steps and a guidance scale, as one image grid.

    samplers: label -> sample(n_steps, guidance, z0, labels) (see the module docstring);
    z0: (n, 1, H, W) or (n, d) noise; labels: (n,) integer classes; steps_options: the step
    counts offered; guidance_range: the slider's (min, max) (the box accepts any finite
    value >= 0); guidance: the first value (default: 1, clipped to the range); nrow: tiles
    per grid row (default: one row per class when every class has the same count, else 8;
    tiles are ordered by class); classify: optional images (n, 1, H, W) -> logits (n, K) or
    predicted labels (n,), to report the class accuracy of the final samples.

    Children, top to bottom: the steps slider (the widget's first slider), the model
    buttons, the guidance slider and box (CSS class ``pflow-input``), the message line, the
    figure (``.figure``), Play / Prev / Next / the step-through slider over the states of the
    current trajectory (disabled when a sampler returns final images only), the readout.
    Code drives it with :meth:`set_steps`, :meth:`set_model`, :meth:`set_guidance`,
    :meth:`step_to`; bad values show a message and keep the last good picture.
    """

    step_noun = "state"

    def __init__(
        self,
        samplers: Mapping[str, Sampler],
        z0: Any,
        labels: Any,
        steps_options: Sequence[int] = (1, 2, 4, 8),
        guidance_range: tuple[float, float] = (0.0, 5.0),
        guidance: float | None = None,
        image_shape: tuple[int, int] | None = None,
        nrow: int | None = None,
        classify: Classifier | None = None,
        title: str | None = None,
        cache_size: int = 64,
        tile_px: int = 48,
        interval_ms: int = 400,
    ) -> None:
        samplers = dict(samplers)
        if not samplers or not all(callable(f) for f in samplers.values()):
            raise ValueError("samplers must map at least one label to a callable")
        self.samplers = samplers
        self.steps_options = step_counts(steps_options, "steps_options")
        lo, hi = (float(v) for v in guidance_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise ValueError(
                f"guidance_range must be (min, max) with 0 <= min < max, got {guidance_range!r}"
            )
        self.guidance_range = (lo, hi)
        self.z0 = torch.as_tensor(z0)
        self.labels = torch.as_tensor(labels)
        n = self.z0.shape[0] if self.z0.dim() else 0
        if self.z0.dim() not in (2, 4) or n < 1:
            raise ValueError(
                f"z0 must be (n, d) or (n, 1, H, W) with n >= 1, got {tuple(self.z0.shape)}"
            )
        if self.labels.shape != (n,) or self.labels.is_floating_point():
            raise ValueError(
                f"labels must be (n,) = ({n},) integers, got {tuple(self.labels.shape)}"
            )
        self.image_shape = image_shape
        self.classify = classify
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple[str, int, float], np.ndarray] = OrderedDict()
        # tiles grouped by class, in class order (stable: the given order within a class)
        self._order = np.argsort(self.labels.numpy(), kind="stable")
        classes, counts = np.unique(self.labels.numpy(), return_counts=True)
        if nrow is None:
            nrow = int(counts[0]) if len(set(counts.tolist())) == 1 and len(classes) > 1 else 8
        if int(nrow) != nrow or nrow < 1:
            raise ValueError(f"nrow (tiles per row) must be an integer >= 1, got {nrow!r}")
        self.nrow = int(nrow)
        self._classes = classes

        self._model = next(iter(samplers))
        self._steps_value = self.steps_options[0]
        start = 1.0 if guidance is None else _guidance(guidance)
        self._guidance_value = min(max(start, lo), hi) if guidance is None else start
        self._states = self._computed(self._model, self._steps_value, self._guidance_value)
        self._step = self.n_steps

        draft = image_grid_figure(
            self._display(self._step), self.nrow, title=title, tile_px=tile_px
        )
        draft.update_layout(uirevision="keep")
        self.figure = LiveFigure(draft)

        self.steps_slider = widgets.SelectionSlider(
            options=list(self.steps_options),
            value=self._steps_value,
            description="steps",
            layout=widgets.Layout(width="300px"),
        )
        self.model_buttons = widgets.ToggleButtons(
            options=list(samplers), value=self._model, description="model"
        )
        self.guidance_slider = widgets.FloatSlider(
            value=min(max(self._guidance_value, lo), hi),
            min=lo,
            max=hi,
            step=0.1,
            description="guidance",
            continuous_update=False,  # each value samples every model step: wait for release
            layout=widgets.Layout(width="300px"),
        )
        self.guidance_box = widgets.FloatText(
            value=self._guidance_value, description="α", layout=widgets.Layout(width="140px")
        )
        self.guidance_box.add_class("pflow-input")  # validated: the browser test types -1 here
        self.message = message_label()
        states_row = self.step_row(
            interval_ms,
            noun="state",
            value=self._step,
            slider_width=None,
            disabled=self.n_steps == 0,
        )
        self.readout = widgets.HTML()

        send_values(self, self.set_steps, self.steps_slider)
        send_values(self, self.set_model, self.model_buttons)
        send_values(self, self.set_guidance, self.guidance_slider, self.guidance_box)
        super().__init__(
            [
                widgets.HBox([self.steps_slider, self.model_buttons]),
                widgets.HBox([self.guidance_slider, self.guidance_box]),
                self.message,
                self.figure,
                states_row,
                self.readout,
            ]
        )
        self._write_text()

    # --- data ---------------------------------------------------------------------------------

    @property
    def n_steps(self) -> int:
        """The last state index of the current trajectory (0 when only final images exist)."""
        return self._states.shape[0] - 1

    states = shown(
        "_states", "The current model's states (m, n, 1, H, W), noise first if a trajectory."
    )

    @property
    def images(self) -> np.ndarray:
        """The final samples (n, 1, H, W) of the current setting, in the given order."""
        return self._states[-1]

    @property
    def setting(self) -> tuple[str, int, float]:
        """(model, steps, guidance) now shown."""
        return self._model, self._steps_value, self._guidance_value

    def _computed(self, model: str, steps: int, guidance: float) -> np.ndarray:
        if model not in self.samplers:
            raise ValueError(f"model must be one of {', '.join(self.samplers)}; got {model!r}")
        if steps not in self.steps_options:
            raise ValueError(
                f"steps must be one of {', '.join(map(str, self.steps_options))}; got {steps!r}"
            )
        guidance = _guidance(guidance)
        key = (model, int(steps), round(guidance, 9))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with torch.no_grad():
            out = self.samplers[model](int(steps), guidance, self.z0, self.labels)
        states = sampled_states(out, int(steps), self.z0.shape[0], self.image_shape)
        self._cache[key] = states
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return states

    def _display(self, i: int) -> np.ndarray:
        return self._states[i][self._order]

    def accuracy(self) -> float | None:
        """Share of final samples the classifier assigns to their label (None without one)."""
        if self.classify is None:
            return None
        with torch.no_grad(), single_threaded():
            out = torch.as_tensor(self.classify(torch.from_numpy(self.images.copy())))
        predicted = out.argmax(-1) if out.dim() == 2 else out
        return float((predicted.cpu() == self.labels).double().mean())

    # --- drawing ------------------------------------------------------------------------------

    def _write_text(self) -> None:
        model, steps, guidance = self.setting
        traj = self.n_steps > 0
        where = f"state {self._step} of {self.n_steps} (0 = noise)" if traj else "final samples"
        self.time_label.value = f"t = {self._step / self.n_steps:.2f}" if traj else ""
        parts = [f"<b>{model}</b>, {steps} step(s), guidance α = {guidance:g}", where]
        rows = ", ".join(str(c) for c in self._classes)
        parts.append(f"tiles ordered by class ({rows}), {self.nrow} per row")
        acc = self.accuracy()
        if acc is not None:
            parts.append(f"class accuracy of the final samples: {100 * acc:.1f}%")
        self.readout.value = " &nbsp;|&nbsp; ".join(parts)

    def _show_step(self, i: int) -> None:
        """State i (``step_to``) of the current trajectory (0 = the noise z0)."""
        self.figure.data[0].z = image_grid(self._display(i), self.nrow)
        self._write_text()

    # --- controls -----------------------------------------------------------------------------

    def _show(self, model: str, steps: int, guidance: Any) -> bool:
        with shown_errors(self.message) as outcome, single_threaded():
            states = self._computed(model, steps, guidance)
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "Showing the previous samples")
        self._model, self._steps_value, self._guidance_value = model, int(steps), float(guidance)
        self._states = states
        self._sync_controls()
        self.step_to(self.n_steps)
        return True

    def _sync_controls(self) -> None:
        lo, hi = self.guidance_range
        with quietly(self):
            self.steps_slider.value = self._steps_value
            self.model_buttons.value = self._model
            self.guidance_slider.value = min(max(self._guidance_value, lo), hi)
            self.guidance_box.value = self._guidance_value
            self.slider.max = self.play.max = max(self.n_steps, 0)
            self.slider.disabled = self.n_steps == 0

    def set_steps(self, steps: int) -> bool:
        """Sample with ``steps`` steps (one of steps_options); False and a message if bad."""
        return self._show(self._model, steps, self._guidance_value)

    def set_model(self, model: str) -> bool:
        """Show the sampler labelled ``model``; False and a message if unknown."""
        return self._show(model, self._steps_value, self._guidance_value)

    def set_guidance(self, guidance: float) -> bool:
        """Guidance scale alpha >= 0 (finite); False and a message if bad."""
        return self._show(self._model, self._steps_value, guidance)
