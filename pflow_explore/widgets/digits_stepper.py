"""Step through one image trajectory: x_t, its x0-estimate, and which eigen-features are fixed.

Card 01_painters, "outline first": in the eigenbasis u_k of a Gaussian fitted to the data
(k = 1 the largest variance), the share of feature k already fixed in the x0-estimate at step
i is measured as

    share_k(i) = c_k(xhat0_i) / c_k(x_final),    c_k(x) = u_k^T (x - mu),

with x_final the trajectory's last image, and drawn beside the Gaussian prediction
f_k(sigma_i) = sqrt(lambda_k / (lambda_k + sigma_i^2)). For the exact Gaussian flow the two
agree (the denoiser along a trajectory through c_k(0) is f_k c_k(0)); a learned model shows
how far that holds. The widget takes tensors, not a model: the chapter computes the
trajectory (learned or analytic) and passes it in.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from pflow_explore.scale import single_threaded
from pflow_explore.theory.gaussian_flow import GaussianFlow
from pflow_explore.viz.arrays import as_numpy
from pflow_explore.viz.images import to_uint8
from pflow_explore.viz.style import GREEN, IMAGE_HOVER, RED, figure_layout, margins
from pflow_explore.widgets.controls import shown
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.messages import message_label, show_rejected, shown_errors
from pflow_explore.widgets.stepping import StepControls

SHARE_RANGE = (-0.5, 1.5)
BAR_COLOR = GREEN
PREDICTION_COLOR = RED


def fixed_feature_share(
    flow: GaussianFlow,
    estimates: Any,
    final: Any,
    top_k: int,
    clip: tuple[float, float] = SHARE_RANGE,
) -> np.ndarray:
    """share_k(i) = c_k(estimates_i) / c_k(final) for the top_k eigen-features, (m, top_k).

    estimates: (m, d) x0-estimates along a trajectory; final: (d,) the image it ends at;
    c_k(x) = u_k^T (x - mu) with u_k the flow's eigenvectors in decreasing-lambda order.
    The ratio does not depend on the sign of u_k. It is clipped to ``clip`` (default
    [-0.5, 1.5]: 0 = nothing of feature k decided yet, 1 = as in the final image; beyond,
    overshoot or the wrong sign), and NaN (no bar) where c_k(final) = 0 exactly.
    """
    est = torch.as_tensor(as_numpy(estimates, "estimates"))
    end = torch.as_tensor(as_numpy(final, "final")).reshape(1, -1)
    if est.dim() != 2 or est.shape[1] != flow.dim or end.shape[1] != flow.dim:
        raise ValueError(
            f"estimates must be (m, {flow.dim}) and final ({flow.dim},), got "
            f"{tuple(est.shape)} and {tuple(end.shape)}"
        )
    if not isinstance(top_k, numbers.Integral) or not 1 <= top_k <= flow.dim:
        raise ValueError(f"top_k must be an integer in [1, {flow.dim}], got {top_k!r}")
    num = flow.to_eigen(est)[:, : int(top_k)].numpy()
    den = flow.to_eigen(end)[0, : int(top_k)].numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)
    return np.clip(share, *clip)


@dataclass(frozen=True)
class StepperData:
    """A validated trajectory: images (m, H, W) as float64, sigmas (m,), and derived curves.

    shares (m, K): :func:`fixed_feature_share`; predicted (m, K): f_k(sigma_i).
    """

    trajectory: np.ndarray
    estimates: np.ndarray
    sigmas: np.ndarray
    flow: GaussianFlow
    shares: np.ndarray
    predicted: np.ndarray


def _images(x: Any, name: str, image_shape: tuple[int, int] | None) -> np.ndarray:
    """(m, d), (m, H, W) or (m, 1, H, W) -> (m, H, W) float64."""
    a = as_numpy(x, name)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 2:
        d = a.shape[1]
        if image_shape is None:
            side = math.isqrt(d)
            if side * side != d:
                raise ValueError(
                    f"{name} (m, d) with d = {d} not a square: pass image_shape=(H, W)"
                )
            image_shape = (side, side)
        if image_shape[0] * image_shape[1] != d:
            raise ValueError(f"image_shape {image_shape} does not hold d = {d} pixels")
        a = a.reshape(a.shape[0], *image_shape)
    if a.ndim != 3 or a.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (m, d), (m, H, W) or (m, 1, H, W) with m >= 1, "
            f"got {tuple(as_numpy(x, name).shape)}"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return a


def validated_stepper_data(
    trajectory: Any,
    sigmas: Any,
    x0_estimates: Any,
    flow: GaussianFlow,
    top_k: int,
    image_shape: tuple[int, int] | None = None,
) -> StepperData:
    """Check shapes and values (ValueError naming the bad argument) and compute the curves."""
    if not isinstance(flow, GaussianFlow):
        raise ValueError(f"flow must be a GaussianFlow, got {type(flow).__name__}")
    x = _images(trajectory, "trajectory", image_shape)
    est = _images(x0_estimates, "x0_estimates", image_shape)
    if est.shape != x.shape:
        raise ValueError(
            f"x0_estimates must match the trajectory's shape {x.shape}, got {est.shape}"
        )
    m, h, w = x.shape
    if h * w != flow.dim:
        raise ValueError(f"images have {h}x{w} = {h * w} pixels but flow.dim = {flow.dim}")
    s = as_numpy(sigmas, "sigmas")
    if s.shape != (m,):
        raise ValueError(f"sigmas must have shape (m,) = ({m},), one per image, got {s.shape}")
    if not (np.isfinite(s).all() and (s >= 0).all()):
        raise ValueError("sigmas must be finite and >= 0")
    with single_threaded():  # tiny tensors: see single_threaded's note
        shares = fixed_feature_share(flow, est.reshape(m, -1), x[-1].reshape(-1), top_k)
        predicted = flow.feature_share(torch.as_tensor(s)).numpy()[:, : shares.shape[1]]
    return StepperData(x, est, s, flow, shares, predicted)


class DigitsStepper(StepControls, widgets.VBox):
    """Step through one image trajectory with its x0-estimates and feature shares.

    trajectory: (m, d), (m, H, W) or (m, 1, H, W) images, step 0 the noise end, in the VE
    form x = x0 + sigma z with pixels of x0 in [-1, 1] (for a VP trajectory pass
    x / sqrt(abar) and sigma = sqrt((1 - abar) / abar)); sigmas: (m,); x0_estimates: same
    shape as trajectory; flow: the GaussianFlow fitted to the data (its eigenvectors define
    the features, its eigenvalues the prediction f_k); top_k: how many features get a bar
    (default min(8, d)).

    Pixels: an image v is drawn as gray uint8 round(255 (clip(v, -1, 1) + 1) / 2)
    (:func:`pflow_explore.viz.images.to_uint8`). With ``scale_xt`` (default) x_t is drawn as
    x_t / sqrt(1 + sigma^2), the same point on the VP path (sqrt(abar) x0 + sqrt(1 - abar) z,
    abar = 1 / (1 + sigma^2)), so noise stays in range at every level; the x0-estimate is
    drawn as it is.

    Children: one FigureWidget (x_t | x0-estimate | bars of share_k with f_k as markers),
    then Play / Prev / Next / the step slider (the widget's first slider), the readout and
    the message line. ``set_trajectory`` swaps the data; bad input shows a message and keeps
    the last good picture.
    """

    def __init__(
        self,
        trajectory: Any,
        sigmas: Any,
        x0_estimates: Any,
        flow: GaussianFlow,
        top_k: int | None = None,
        image_shape: tuple[int, int] | None = None,
        scale_xt: bool = True,
        interval_ms: int = 150,
        image_px: int = 220,
    ) -> None:
        if not isinstance(flow, GaussianFlow):
            raise ValueError(f"flow must be a GaussianFlow, got {type(flow).__name__}")
        self.top_k = min(8, flow.dim) if top_k is None else top_k
        self.image_shape = image_shape
        self.scale_xt = bool(scale_xt)
        self._data = validated_stepper_data(
            trajectory, sigmas, x0_estimates, flow, self.top_k, image_shape
        )
        self._step = 0
        # Drawn before wrapping: a frontend that connects later (Voila renders after the
        # notebook ran) builds its view from the FigureWidget's construction-time data.
        draft = self._empty_figure(image_px)
        self._fill(draft, 0)
        self.figure = LiveFigure(draft)

        controls = self.step_row(interval_ms)
        self.readout = widgets.HTML()
        self.message = message_label()
        super().__init__([self.figure, controls, self.readout, self.message])
        self.step_to(0)

    # --- data -------------------------------------------------------------------------

    @property
    def n_steps(self) -> int:
        """The last step index (m - 1)."""
        return self._data.trajectory.shape[0] - 1

    data = shown("_data", "The last good data (what the figure shows).")
    shares = shown(
        "_data.shares", "share_k(i) for every step, (m, K) (see :func:`fixed_feature_share`)."
    )
    predicted = shown("_data.predicted", "The Gaussian prediction f_k(sigma_i), (m, K).")

    def displayed_xt(self, i: int) -> np.ndarray:
        """The array (H, W) drawn for x_t at step i: x_t / sqrt(1 + sigma^2) if scale_xt."""
        x = self._data.trajectory[i]
        return x / math.sqrt(1.0 + self._data.sigmas[i] ** 2) if self.scale_xt else x

    def set_trajectory(
        self, trajectory: Any, sigmas: Any, x0_estimates: Any, flow: GaussianFlow | None = None
    ) -> bool:
        """Show a new trajectory (and optionally a new flow) in the same figure.

        Returns True on success; bad input shows a message, keeps the last good picture and
        returns False (never raises).
        """
        with shown_errors(self.message) as outcome:
            data = validated_stepper_data(
                trajectory,
                sigmas,
                x0_estimates,
                self._data.flow if flow is None else flow,
                self.top_k,
                self.image_shape,
            )
        if not outcome.ok:
            return show_rejected(self.message, outcome.error, "Showing the previous trajectory")
        self._data = data
        self._step = min(self._step, self.n_steps)
        self._fit_step_range()
        self.step_to(self._step)
        return True

    # --- drawing ----------------------------------------------------------------------

    def _empty_figure(self, image_px: int) -> go.Figure:
        fig = make_subplots(
            rows=1,
            cols=3,
            column_widths=[0.27, 0.27, 0.46],
            horizontal_spacing=0.06,
            subplot_titles=(
                "x<sub>t</sub>",
                "x0-estimate D(x<sub>t</sub>; σ)",
                "share of feature k fixed",
            ),
        )
        k = np.arange(1, self._data.shares.shape[1] + 1)
        fig.add_trace(go.Image(name="x_t", hovertemplate=IMAGE_HOVER), 1, 1)
        fig.add_trace(go.Image(name="x0-estimate", hovertemplate=IMAGE_HOVER), 1, 2)
        fig.add_trace(
            go.Bar(
                x=k,
                name="measured c_k(x̂0) / c_k(final)",
                marker_color=BAR_COLOR,
                hovertemplate="k = %{x}: %{y:.3f}<extra>measured</extra>",
            ),
            1,
            3,
        )
        fig.add_trace(
            go.Scatter(
                x=k,
                mode="markers+lines",
                name="Gaussian f_k(σ)",
                marker=dict(color=PREDICTION_COLOR, symbol="diamond", size=8),
                line=dict(color=PREDICTION_COLOR, width=1, dash="dot"),
                hovertemplate="k = %{x}: %{y:.3f}<extra>Gaussian</extra>",
            ),
            1,
            3,
        )
        for col in (1, 2):
            fig.update_xaxes(visible=False, row=1, col=col)
            fig.update_yaxes(visible=False, autorange="reversed", row=1, col=col)
        fig.update_xaxes(title_text="feature k (by decreasing λ_k)", dtick=1, row=1, col=3)
        fig.update_yaxes(range=[SHARE_RANGE[0] - 0.05, SHARE_RANGE[1] + 0.05], row=1, col=3)
        fig.add_hline(y=1.0, line=dict(color="#888", width=1, dash="dash"), row=1, col=3)
        fig.update_layout(
            **figure_layout(
                height=image_px + 90,
                margin=margins(20, 20, 40, 50),
                width=int(image_px / 0.27) + 60,
                legend=dict(orientation="h", x=0.55, y=-0.25),
            )
        )
        return fig

    def _fill(self, fig: go.Figure, i: int) -> None:
        """Step i's images (uint8 gray as RGB), measured shares and prediction into ``fig``."""
        d = self._data
        xt_image, estimate_image, bars, prediction = fig.data
        with fig.batch_update():
            xt_image.z = np.repeat(to_uint8(self.displayed_xt(i))[..., None], 3, axis=-1)
            estimate_image.z = np.repeat(to_uint8(d.estimates[i])[..., None], 3, axis=-1)
            bars.y = d.shares[i]
            prediction.y = d.predicted[i]

    def _show_step(self, i: int) -> None:
        """Step i in [0, n_steps] (``step_to``): both images, the bars and the prediction,
        in place."""
        d = self._data
        self._fill(self.figure, i)
        sigma = d.sigmas[i]
        self.time_label.value = f"σ = {sigma:.3f}"
        fixed = np.flatnonzero(d.shares[i] >= 1 / math.sqrt(2)) + 1
        diff = np.abs(d.shares[i] - d.predicted[i])
        gap = float(diff[np.isfinite(diff)].mean()) if np.isfinite(diff).any() else math.nan
        self.readout.value = (
            f"step {i} of {self.n_steps}, σ = {sigma:.3f} &nbsp;|&nbsp; features with share "
            f"≥ 1/√2: {', '.join(map(str, fixed)) or 'none'} &nbsp;|&nbsp; mean |measured − "
            f"Gaussian| over k ≤ {d.shares.shape[1]}: {gap:.3f}"
        )
