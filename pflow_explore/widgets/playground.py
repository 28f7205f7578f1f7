"""The playground widget: draw points, train a flow on them, step through its trajectories.

Canvas: a figure whose background is an invisible grid of hit points, so a click anywhere
adds a small blob of points there and a box or lasso selection fills the region with
points (plotly reports clicks and selections on points only). A preset (``datasets.toy2d``)
replaces the drawing; Clear empties it. Train runs ``playground.train`` in a background
thread, so the page stays responsive: a progress bar and a live loss curve follow it, and
the same button (then labelled Cancel) stops it. When it ends, the trajectories from noise
to samples appear in a :class:`TrajectoryExplorer` (slider, play, step) over the drawn
points, with the energy distance of the samples to the points beside its two-sample floor;
a check box adds the learned field (arrows) and the samples' density (contours) at the
explorer's current step.
Bad input (too few points, a diverging training) shows a message and keeps the last good
model and picture.

Time convention: the caller's (each method's own: flow time for the rectified flows, the
noise level sigma for EDM; the explorer labels which).
"""

from __future__ import annotations

import threading
from dataclasses import replace

import ipywidgets as widgets
import numpy as np
import torch

from pflow_explore import playground as pg
from pflow_explore.training import TrainingDiverged
from pflow_explore.viz.arrays import plain_floats
from pflow_explore.viz.fields import arrow_scale, plane_grid, quiver_trace
from pflow_explore.viz.style import figure_layout
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import describe_error, message_label, show_rejected
from pflow_explore.widgets.trajectory import TrajectoryExplorer

EXTENT = 4.0  # the canvas spans [-EXTENT, EXTENT]^2
GRID = 49  # hit points per axis
BLOB = 12  # points added per click
BLOB_STD = 0.12
PROGRESS_EVERY = 25  # steps between progress updates


class Playground(widgets.VBox):
    """Draw (or pick) points, choose a method, train, explore; see the module docstring.

    ``settings``: the training sizes (``playground.PlaygroundSettings``); ``preset``: the
    toy density drawn at the start (None: an empty canvas)."""

    def __init__(
        self,
        settings: pg.PlaygroundSettings | None = None,
        preset: str | None = "eight_gaussians",
        n_preset: int = 600,
        seed: int = 0,
    ) -> None:
        self.settings = settings or pg.PlaygroundSettings()
        self._gen = torch.Generator().manual_seed(seed)
        self._n_preset = int(n_preset)
        self._points = np.zeros((0, 2), dtype=np.float32)
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self.result: pg.TrainedFlow | None = None
        self.error: BaseException | None = None

        lin = np.linspace(-EXTENT, EXTENT, GRID)
        gx, gy = np.meshgrid(lin, lin)
        hit = dict(
            type="scatter",
            x=gx.ravel(),
            y=gy.ravel(),
            mode="markers",
            hoverinfo="none",
            marker=dict(size=9, opacity=0),
            showlegend=False,
            name="canvas",
        )
        drawn = dict(
            type="scatter",
            x=[],
            y=[],
            mode="markers",
            hoverinfo="skip",
            name="your points",
            marker=dict(size=4, color="rgba(31,119,180,0.7)"),
        )
        layout = figure_layout(
            title="Click to add points, box/lasso to fill a region", height=380, width=420
        )
        layout.update(
            xaxis=dict(range=[-EXTENT, EXTENT]),
            yaxis=dict(range=[-EXTENT, EXTENT]),
            dragmode="lasso",
            hovermode="closest",
            showlegend=False,
        )
        self.canvas = LiveFigure(data=[hit, drawn], layout=layout)
        self.canvas.data[0].on_click(self._on_click)
        self.canvas.data[0].on_selection(self._on_select)

        self.preset = widgets.Dropdown(
            options=[("(draw your own)", "")] + [(p, p) for p in pg.PRESETS],
            value=preset or "",
            description="preset",
        )
        self.preset.observe(self._on_preset, names="value")
        self.clear_button = widgets.Button(description="Clear")
        self.clear_button.on_click(lambda _b: self.set_points(np.zeros((0, 2))))
        self.method = widgets.Dropdown(options=list(pg.METHODS), description="method")
        self.steps_box = widgets.IntText(value=self.settings.steps, description="steps")
        self.steps_box.add_class("pflow-input")
        self.train_button = widgets.Button(description="Train", button_style="primary")
        self.train_button.add_class("pflow-train")
        self.train_button.on_click(self._on_train)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="training")
        self.status = widgets.HTML("")
        self.status.add_class("pflow-status")
        self.message = message_label()
        self.loss_figure = LiveFigure(
            data=[dict(type="scatter", x=[], y=[], mode="lines", name="loss")],
            layout=figure_layout(title="Training loss", height=240, width=380),
        )
        self.explorer: TrajectoryExplorer | None = None
        self._times: np.ndarray | None = None
        self._states: np.ndarray | None = None
        self.show_field = widgets.Checkbox(
            value=False, description="show the field and the density at the current step"
        )
        self.show_field.observe(lambda _c: self._draw_field(), names="value")
        self.field_figure = LiveFigure(
            data=[
                dict(
                    type="histogram2dcontour",
                    x=[],
                    y=[],
                    showscale=False,
                    ncontours=12,
                    colorscale="Blues",
                    contours=dict(coloring="fill"),
                    name="density",
                ),
                quiver_trace(np.zeros((0, 2)), np.zeros((0, 2))).to_plotly_json(),
            ],
            layout=figure_layout(title="The field and the samples' density", height=380, width=420),
        )
        square = dict(range=[-EXTENT, EXTENT])
        self.field_figure.layout.update(xaxis=square, yaxis=square, showlegend=False)
        self.field_box = widgets.VBox([])
        self.explorer_box = widgets.VBox([])
        if preset:
            self._on_preset({"new": preset})
        controls = widgets.VBox(
            [
                widgets.HBox([self.preset, self.clear_button]),
                widgets.HBox([self.method, self.steps_box, self.train_button]),
                self.progress,
                self.status,
                self.message,
                self.loss_figure,
            ]
        )
        super().__init__(
            [
                widgets.HBox([self.canvas, controls]),
                self.explorer_box,
                self.show_field,
                self.field_box,
            ]
        )

    # --- the drawing ------------------------------------------------------------------
    @property
    def points(self) -> np.ndarray:
        """The drawn points (n, 2)."""
        return self._points.copy()

    def set_points(self, points: object) -> bool:
        """Replace the drawing by ``points`` (n, 2); bad input: a message, nothing changes."""
        try:
            x = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            if not np.isfinite(x).all():
                raise ValueError("the points contain NaN or infinite values")
        except (TypeError, ValueError) as err:
            return show_rejected(self.message, describe_error(err), "The drawing is unchanged")
        self._points = x[: pg.MAX_POINTS]
        with self.canvas.batch_update():
            self.canvas.data[1].x, self.canvas.data[1].y = self._points.T.tolist()
        self.canvas.layout.title.text = f"{len(self._points)} points: click, box or lasso to add"
        return True

    def add_blob(self, x: float, y: float, n: int = BLOB) -> None:
        """Add ``n`` points around (x, y) (what a click does)."""
        blob = np.array([x, y]) + BLOB_STD * torch.randn(n, 2, generator=self._gen).numpy()
        self.set_points(np.concatenate([self._points, blob.astype(np.float32)]))

    def fill(self, xs: list[float], ys: list[float]) -> None:
        """Add points spread over the selected grid points (what a box or lasso does)."""
        sel = np.stack([np.asarray(xs, float), np.asarray(ys, float)], axis=1)
        if len(sel) == 0:
            return
        cell = 2 * EXTENT / (GRID - 1)
        jitter = (torch.rand(len(sel), 2, generator=self._gen).numpy() - 0.5) * cell
        self.set_points(np.concatenate([self._points, (sel + jitter).astype(np.float32)]))

    def _on_click(self, _trace: object, points: object, _state: object) -> None:
        for x, y in zip(points.xs, points.ys, strict=True):
            self.add_blob(x, y)

    def _on_select(self, _trace: object, points: object, _selector: object) -> None:
        self.fill(points.xs, points.ys)

    def _on_preset(self, change: dict) -> None:
        if change["new"]:
            seed = int(torch.randint(1 << 30, (1,), generator=self._gen))
            self.set_points(pg.preset_points(change["new"], self._n_preset, seed).numpy())

    # --- training ---------------------------------------------------------------------
    @property
    def training(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def train(self, wait: bool = False) -> bool:
        """Start training on the drawing (what the Train button does); ``wait``: block until
        it ends (tests, scripts). Returns False when the input was rejected."""
        if self.training:
            return False
        try:
            steps = int(self.steps_box.value)
            settings = replace(self.settings, steps=steps)
            points = pg.check_points(self._points)
        except (TypeError, ValueError) as err:
            return show_rejected(self.message, describe_error(err), self._keeps())
        self.message.value = ""
        self._cancel.clear()
        self.progress.max = steps * (2 if self.method.value.endswith("reflow") else 1)
        self.progress.value = 0
        self.train_button.description = "Cancel"
        self.status.value = f"<i>training {self.method.value} on {len(points)} points&hellip;</i>"
        job = (points, self.method.value, settings)
        self._thread = threading.Thread(target=self._run, args=job, daemon=True)
        self._thread.start()
        if wait:
            self.join()
        return True

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _on_train(self, _button: object) -> None:
        if self.training:
            self.cancel()
        else:
            self.train()

    def _keeps(self) -> str:
        return "Keeping the last model" if self.result is not None else "Nothing was trained"

    def _run(self, points: torch.Tensor, method: str, settings: pg.PlaygroundSettings) -> None:
        losses: list[float] = []
        offset = {"1-RF": 0, "EDM": 0, "b, eta": 0, "2-RF": settings.steps}

        def on_progress(stage: str, step: int, loss: float) -> None:
            losses.append(loss)
            if step % PROGRESS_EVERY == 0 or step == settings.steps - 1:
                self.progress.value = offset[stage] + step + 1
                with self.loss_figure.batch_update():
                    self.loss_figure.data[0].x = list(range(len(losses)))
                    self.loss_figure.data[0].y = losses

        try:
            result = pg.train(points, method, settings, on_progress, self._cancel)
            times, states = result.trajectories()
            distance, floor = result.quality()
            self._show(result, times, states, distance, floor)
        except (pg.Cancelled, TrainingDiverged, ValueError, RuntimeError) as err:
            self.error = err
            show_rejected(self.message, describe_error(err), self._keeps())
            self.status.value = ""
        finally:
            self.train_button.description = "Train"

    def _show(
        self,
        result: pg.TrainedFlow,
        times: torch.Tensor,
        states: torch.Tensor,
        distance: float,
        floor: float,
    ) -> None:
        self.result, self.error = result, None
        time_name = "sigma" if result.method in pg.DIFFUSION else "t"
        self.status.value = (
            f"{result.method}: trained in {result.seconds:.1f} s; energy distance of "
            f"{states.shape[1]} samples to your points {distance:.4f} (two-sample floor "
            f"{floor:.4f}); {len(times) - 1} sampler steps, {time_name} from "
            f"{float(times[0]):g} to {float(times[-1]):g}"
        )
        self._times, self._states = times.numpy(), states.numpy()
        if self.explorer is None:
            self.explorer = TrajectoryExplorer(
                states, times, background=result.points, title="From noise to your points"
            )
            self.explorer.slider.observe(lambda _c: self._draw_field(), names="value")
            self.explorer_box.children = [self.explorer]
        else:
            self.explorer.set_trajectories(states, times)
        self.explorer.step_to(self.explorer.n_steps)
        self._draw_field()

    def _draw_field(self) -> None:
        """The learned field (arrows on a 15 x 15 grid) and the density of the samples
        (filled contours) at the explorer's current step, when the box is ticked."""
        if not self.show_field.value or self.result is None or self.explorer is None:
            self.field_box.children = []
            return
        step = self.explorer.step
        time_value, samples = float(self._times[step]), self._states[step]
        xs, ys, grid = plane_grid((-EXTENT, EXTENT), (-EXTENT, EXTENT), 15)
        v = self.result.velocity(torch.as_tensor(grid), time_value).numpy()
        arrows = quiver_trace(grid, v, arrow_scale(v, xs[1] - xs[0]))
        name = "sigma" if self.result.method in pg.DIFFUSION else "t"
        with self.field_figure.batch_update():
            self.field_figure.data[0].x, self.field_figure.data[0].y = samples.T.tolist()
            self.field_figure.data[1].x = plain_floats(arrows.x)
            self.field_figure.data[1].y = plain_floats(arrows.y)
            self.field_figure.layout.title.text = f"Field and density at {name} = {time_value:.3g}"
        self.field_box.children = [self.field_figure]
