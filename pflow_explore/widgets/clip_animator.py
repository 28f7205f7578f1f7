"""Chapter 10's explorer: play and step through an animated clipart, pick the character and
the motion, toggle the ablation's components, overlay the mesh and the Bezier controls.

Every animation (character x motion x variant) is precomputed by the chapter, so switching
is instant: the widget only redraws. The figure holds, bottom to top: the keypoints' full
trajectories (faint), the mesh edges (one line trace), the skeleton, the keypoints and the
Bezier control polygons.

Time convention: physical time of the animation, clip time tau in [0, 1], frame f at
tau_f = f / (F - 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from pflow_explore.viz import animation_figures as af
from pflow_explore.viz.arrays import polyline_lists
from pflow_explore.viz.style import GRAY, TEMPLATE, line_style
from pflow_explore.widgets.controls import checked_number, send_values, set_quietly
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label, show_rejected, shown_errors
from pflow_explore.widgets.stepping import StepControls


class ClipAnimator(StepControls, widgets.VBox):
    """animations {"character/motion/variant": (vertices (F, N, 2), keypoints (F, K, 2),
    controls (K, 4, 2))}; faces {character: (T, 3)}. Controls: Play / Prev / Next / the
    frame slider (the first slider, at frame 0); character and motion menus; the variant
    buttons (each ablation component); mesh / controls / paths checkboxes; the frame time in
    ms (an IntText of class ``pflow-input``, 20..2000). Bad input keeps the picture and says
    why in ``message``."""

    step_noun = "frame"

    def __init__(
        self,
        animations: Mapping[str, Sequence[Any]],
        faces: Mapping[str, Any],
        variants: Sequence[str],
        interval_ms: int = 150,
        extent: float = 1.3,
    ) -> None:
        keys = [k.split("/") for k in animations]
        if not keys or any(len(k) != 3 for k in keys):
            raise ValueError("animations need keys 'character/motion/variant'")
        self.animations = {
            k: [np.asarray(a, dtype=np.float32) for a in v] for k, v in animations.items()
        }
        self.faces = {c: np.asarray(f) for c, f in faces.items()}
        self.characters = list(dict.fromkeys(k[0] for k in keys))
        self.motions = list(dict.fromkeys(k[1] for k in keys))
        self.variants = [v for v in variants if any(k[2] == v for k in keys)]
        self.character, self.motion, self.variant = (
            self.characters[0],
            self.motions[0],
            self.variants[0],
        )
        self.show_mesh, self.show_controls, self.show_paths = True, True, True
        self._step, self._quiet = 0, False
        fig = go.Figure()
        fig.add_trace(go.Scatter(name="paths", hoverinfo="skip", **line_style(GRAY, 0.8)))
        for tr in af.frame_traces(*self._frame(0), np.zeros((1, 4, 2))):
            fig.add_trace(tr)
        self._draw_into(fig.data, 0)  # the first picture, before the wrap (see LiveFigure)
        fig.update_layout(
            template=TEMPLATE,
            height=520,
            width=560,
            uirevision="keep",
            xaxis=dict(range=[-extent, extent], visible=False),
            yaxis=dict(range=[-extent, extent], visible=False, scaleanchor="x"),
            margin=dict(l=10, r=10, t=40, b=10),
            legend=dict(orientation="h", y=-0.02),
        )
        self.figure = LiveFigure(fig)
        self.message, self.readout = message_label(), widgets.HTML()
        row = self.step_row(interval_ms, noun="frame", time_label=widgets.Label)
        self.character_menu = widgets.Dropdown(options=self.characters, description="clipart")
        self.motion_menu = widgets.Dropdown(options=self.motions, description="motion")
        self.variant_buttons = widgets.ToggleButtons(options=self.variants, description="method")
        self.mesh_box = widgets.Checkbox(value=True, description="mesh", indent=False)
        self.controls_box = widgets.Checkbox(
            value=True, description="Bezier controls", indent=False
        )
        self.paths_box = widgets.Checkbox(value=True, description="paths", indent=False)
        self.interval_box = widgets.IntText(
            value=interval_ms, description="frame ms", layout=widgets.Layout(width="170px")
        )
        self.interval_box.add_class("pflow-input")  # validated: the browser test types -1 here
        send_values(
            self, lambda c: self.set_case(c, self.motion, self.variant), self.character_menu
        )
        send_values(
            self, lambda m: self.set_case(self.character, m, self.variant), self.motion_menu
        )
        send_values(
            self, lambda v: self.set_case(self.character, self.motion, v), self.variant_buttons
        )
        send_values(
            self,
            lambda _: self.set_overlays(
                self.mesh_box.value, self.controls_box.value, self.paths_box.value
            ),
            self.mesh_box,
            self.controls_box,
            self.paths_box,
        )
        send_values(self, self.set_interval, self.interval_box)
        super().__init__(
            [
                row,
                widgets.HBox([self.character_menu, self.motion_menu, self.interval_box]),
                self.variant_buttons,
                widgets.HBox([self.mesh_box, self.controls_box, self.paths_box]),
                self.message,
                self.figure,
                self.readout,
            ]
        )
        self._show_step(0)

    # --- data ---------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return f"{self.character}/{self.motion}/{self.variant}"

    @property
    def n_steps(self) -> int:
        return self.animations[self.key][0].shape[0] - 1

    def _frame(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        V, kp, _ = self.animations[self.key]
        return V[i], self.faces[self.character], kp[i]

    def _draw_into(self, traces: Sequence[Any], i: int) -> None:
        V, kp, P = self.animations[self.key]
        paths, mesh, skel, points, controls = traces
        keypoint_paths = polyline_lists(np.swapaxes(kp, 0, 1))  # (K, F, 2): one line a keypoint
        paths.x, paths.y = keypoint_paths if self.show_paths else ([], [])
        mx, my = af.mesh_xy(V[i], self.faces[self.character]) if self.show_mesh else ([], [])
        mesh.x, mesh.y = mx, my
        skel.x, skel.y = af.skeleton_xy(kp[i])
        points.x, points.y = kp[i, :, 0].tolist(), kp[i, :, 1].tolist()
        controls.x, controls.y = af.controls_xy(P) if self.show_controls else ([], [])

    def _show_step(self, i: int) -> None:
        with self.figure.batch_update():
            self._draw_into(self.figure.data, i)
        self.time_label.value = f"tau = {i / max(self.n_steps, 1):.2f}"
        self.readout.value = (
            f"<b>{self.character}</b>, {self.motion}, <i>{self.variant}</i>: "
            f"frame {i} of {self.n_steps}"
        )

    # --- setters --------------------------------------------------------------------------
    def set_case(self, character: str, motion: str, variant: str) -> bool:
        """Show another animation (same frame); False with a message if there is none."""
        key = f"{character}/{motion}/{variant}"
        if key not in self.animations:
            for control, value in (
                (self.character_menu, self.character),
                (self.motion_menu, self.motion),
                (self.variant_buttons, self.variant),
            ):
                set_quietly(self, control, value)
            return show_rejected(
                self.message, f"no animation for {key}", "Showing the previous one"
            )
        self.character, self.motion, self.variant = character, motion, variant
        for control, value in (
            (self.character_menu, character),
            (self.motion_menu, motion),
            (self.variant_buttons, variant),
        ):
            set_quietly(self, control, value)
        with shown_errors(self.message):
            self._step = min(self._step, self.n_steps)
            self._fit_step_range()
            self._show_step(self._step)
        return True

    def set_overlays(self, mesh: bool, controls: bool, paths: bool) -> bool:
        """Draw or hide the mesh, the Bezier control polygons and the keypoint paths."""
        self.show_mesh, self.show_controls, self.show_paths = (
            bool(mesh),
            bool(controls),
            bool(paths),
        )
        for box, value in (
            (self.mesh_box, mesh),
            (self.controls_box, controls),
            (self.paths_box, paths),
        ):
            set_quietly(self, box, bool(value))
        with shown_errors(self.message):
            self._show_step(self._step)
        return True

    def set_interval(self, ms: Any) -> bool:
        """The Play control's frame time in ms, a whole number in [20, 2000]."""
        try:
            value = checked_number(ms, "frame ms", 20, what="a whole number of milliseconds")
            if value > 2000 or int(value) != value:
                raise ValueError(f"frame ms must be a whole number in [20, 2000], got {ms!r}")
        except ValueError as err:
            return show_rejected(self.message, err, f"Keeping {self.play.interval} ms")
        self.play.interval = int(value)
        set_quietly(self, self.interval_box, int(value))
        self.message.value = ""
        return True
