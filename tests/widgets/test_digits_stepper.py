"""DigitsStepper, headless: pixels against the documented mapping, bars against eigen-coordinates
computed here with numpy, and, on an exact Gaussian trajectory, against f_k(sigma) itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pflow_explore.theory.gaussian_flow import GaussianFlow
from pflow_explore.widgets import DigitsStepper, fixed_feature_share

H, W = 4, 4
D = H * W
SIGMAS = np.array([5.0, 3.0, 1.8, 1.0, 0.5, 0.2, 0.05, 0.0])
M = len(SIGMAS)


def random_gaussian(seed=0, d=D):
    g = np.random.default_rng(seed)
    a = g.standard_normal((d, d))
    cov = a @ a.T / d + 0.05 * np.eye(d)
    mean = 0.3 * g.standard_normal(d)
    return mean, cov


@pytest.fixture(scope="module")
def gaussian():
    mean, cov = random_gaussian()
    return mean, cov, GaussianFlow(torch.tensor(mean), torch.tensor(cov))


def exact_trajectory(mean, cov, seed=1):
    """VE trajectory (m, d) from x_T and its denoiser outputs, by matrix functions (numpy)."""
    w, v = np.linalg.eigh(cov)
    x_T = mean + SIGMAS[0] * np.random.default_rng(seed).standard_normal(D)
    c_T = v.T @ (x_T - mean)
    traj, est = [], []
    for s in SIGMAS:
        c = c_T * np.sqrt((w + s**2) / (w + SIGMAS[0] ** 2))
        traj.append(mean + v @ c)
        est.append(mean + v @ (w / (w + s**2) * c))
    return np.array(traj), np.array(est)


def pixels(x):
    """The documented mapping: gray uint8 round(255 (clip(x, -1, 1) + 1) / 2), as RGB."""
    p = np.clip(np.rint((np.clip(x, -1, 1) + 1) * 127.5), 0, 255).astype(np.uint8)
    return np.repeat(p[..., None], 3, axis=-1)


def numpy_shares(cov, mean, est, final, k):
    w, v = np.linalg.eigh(cov)
    top = v[:, np.argsort(w)[::-1][:k]]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(((est - mean) @ top) / ((final - mean) @ top), -0.5, 1.5)


def test_images_and_bars_of_the_exact_gaussian_flow(gaussian):
    mean, cov, flow = gaussian
    traj, est = exact_trajectory(mean, cov)
    stepper = DigitsStepper(
        torch.tensor(traj).reshape(M, 1, H, W), SIGMAS, est.reshape(M, 1, H, W), flow, top_k=5
    )
    fig = stepper.figure
    lam = np.sort(np.linalg.eigvalsh(cov))[::-1][:5]
    for i in (0, 3, M - 1):
        stepper.step_to(i)
        xt_img, est_img, bars, prediction = fig.data
        scaled = traj[i] / math.sqrt(1 + SIGMAS[i] ** 2)
        np.testing.assert_array_equal(np.asarray(xt_img.z), pixels(scaled.reshape(H, W)))
        np.testing.assert_array_equal(np.asarray(est_img.z), pixels(est[i].reshape(H, W)))
        f = np.sqrt(lam / (lam + SIGMAS[i] ** 2))
        # the theory: along an exact trajectory the measured share IS f_k(sigma)
        np.testing.assert_allclose(bars.y, f, rtol=1e-6)
        np.testing.assert_allclose(prediction.y, f, rtol=1e-6)
        assert f"σ = {SIGMAS[i]:.3f}" in stepper.time_label.value
        assert "mean |measured − Gaussian| over k ≤ 5: 0.000" in stepper.readout.value
    np.testing.assert_allclose(bars.y, 1.0, rtol=1e-9)  # at sigma = 0 everything is fixed


def test_a_frontend_that_connects_later_sees_step_zero(gaussian):
    mean, cov, flow = gaussian
    traj, est = exact_trajectory(mean, cov)
    stepper = DigitsStepper(traj, SIGMAS, est, flow, top_k=3)
    state = stepper.figure.get_state()["_widget_data"]  # what Voila sends on page open
    scaled = traj[0] / math.sqrt(1 + SIGMAS[0] ** 2)
    np.testing.assert_array_equal(np.asarray(state[0]["z"]), pixels(scaled.reshape(H, W)))
    np.testing.assert_array_equal(np.asarray(state[1]["z"]), pixels(est[0].reshape(H, W)))
    bars = state[2]["y"]
    bars = np.frombuffer(bars["buffer"], dtype=bars["dtype"]) if isinstance(bars, dict) else bars
    np.testing.assert_allclose(bars, stepper.shares[0])


def test_bars_equal_the_shares_of_an_arbitrary_trajectory(gaussian):
    mean, cov, flow = gaussian
    g = np.random.default_rng(5)
    traj = g.uniform(-1.5, 1.5, (M, D))  # (m, d) input, not a Gaussian flow: ratios vary
    est = g.uniform(-1, 1, (M, D))
    stepper = DigitsStepper(traj, SIGMAS, est, flow, top_k=D, scale_xt=False)
    expected = numpy_shares(cov, mean, est, traj[-1], D)
    assert (expected == 1.5).any() or (expected == -0.5).any()  # the clip is exercised
    np.testing.assert_allclose(stepper.shares, expected, rtol=1e-9, atol=1e-12)
    for i in (2, 6):
        stepper.slider.value = i  # what the browser does
        np.testing.assert_allclose(stepper.figure.data[2].y, expected[i], rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(
            np.asarray(stepper.figure.data[0].z), pixels(traj[i].reshape(H, W))
        )  # scale_xt=False: raw, clipped
    lam = np.sort(np.linalg.eigvalsh(cov))[::-1]
    np.testing.assert_allclose(stepper.predicted, np.sqrt(lam / (lam + SIGMAS[:, None] ** 2)))


def test_non_square_images_need_image_shape():
    mean, cov = random_gaussian(seed=2, d=15)
    flow = GaussianFlow(torch.tensor(mean), torch.tensor(cov))
    x = np.random.default_rng(0).uniform(-1, 1, (3, 15))
    with pytest.raises(ValueError, match="image_shape"):
        DigitsStepper(x, [1.0, 0.5, 0.0], x, flow, top_k=3)
    stepper = DigitsStepper(x, [1.0, 0.5, 0.0], x, flow, top_k=3, image_shape=(3, 5))
    assert np.asarray(stepper.figure.data[1].z).shape == (3, 5, 3)
    np.testing.assert_array_equal(np.asarray(stepper.figure.data[1].z), pixels(x[0].reshape(3, 5)))


def test_shares_are_nan_where_the_final_coordinate_is_zero(gaussian):
    mean, cov, flow = gaussian
    est = np.random.default_rng(1).standard_normal((4, D))
    shares = fixed_feature_share(flow, est, mean, top_k=3)  # final = mu: every c_k = 0
    assert shares.shape == (4, 3) and np.isnan(shares).all()
    with pytest.raises(ValueError, match=r"top_k must be an integer in \[1, 16\]"):
        fixed_feature_share(flow, est, mean, top_k=0)


def test_figure_identity_and_one_message_per_step(gaussian):
    mean, cov, flow = gaussian
    traj, est = exact_trajectory(mean, cov)
    stepper = DigitsStepper(traj, SIGMAS, est, flow, top_k=4)
    fig, traces = stepper.figure, stepper.figure.data
    seen = []
    fig.observe(lambda c: c["new"] and seen.append(c["name"]), names=["_py2js_update"])
    fig.observe(lambda c: c["new"] and seen.append(c["name"]), names=["_py2js_addTraces"])
    stepper.next_button.click()
    assert stepper.step == 1 and seen == ["_py2js_update"]
    traj2, est2 = exact_trajectory(mean, cov, seed=9)
    assert stepper.set_trajectory(traj2[:5], SIGMAS[:5], est2[:5]) is True
    assert stepper.slider.max == stepper.play.max == 4 and stepper.step == 1
    assert stepper.figure is fig and stepper.children[0] is fig
    assert all(a is b for a, b in zip(fig.data, traces, strict=True))
    np.testing.assert_array_equal(np.asarray(fig.data[1].z), pixels(est2[1].reshape(H, W)))
    stepper.step_to(4)
    with pytest.raises(ValueError, match=r"step must be an integer in \[0, 4\]"):
        stepper.step_to(5)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda t, s, e, f: (np.where(np.arange(D) == 3, np.nan, t), s, e, f), "NaN"),
        (lambda t, s, e, f: (t, s, e[:-1], f), "x0_estimates must match"),
        (lambda t, s, e, f: (t, s[:-1], e, f), "sigmas must have shape"),
        (lambda t, s, e, f: (t, -s, e, f), "sigmas must be finite and"),
        (lambda t, s, e, f: (t[:, :9], s, e[:, :9], f), "flow.dim = 16"),
        (lambda t, s, e, f: (t, s, e, "flow"), "flow must be a GaussianFlow"),
    ],
)
def test_bad_input_shows_a_message_and_keeps_the_picture(gaussian, change, words):
    mean, cov, flow = gaussian
    traj, est = exact_trajectory(mean, cov)
    stepper = DigitsStepper(traj, SIGMAS, est, flow, top_k=4)
    stepper.step_to(2)
    before = [np.array(t.z if t.type == "image" else t.y, copy=True) for t in stepper.figure.data]
    assert stepper.set_trajectory(*change(traj, SIGMAS, est, flow)) is False
    assert words in stepper.message.value and "previous trajectory" in stepper.message.value
    for old, trace in zip(before, stepper.figure.data, strict=True):
        np.testing.assert_array_equal(trace.z if trace.type == "image" else trace.y, old)
    stepper.next_button.click()  # the old data still step; the message stays
    assert stepper.step == 3 and words in stepper.message.value


def test_the_step_slider_is_the_first_slider_and_play_is_linked(gaussian):
    mean, cov, flow = gaussian
    traj, est = exact_trajectory(mean, cov)
    stepper = DigitsStepper(traj, SIGMAS, est, flow)
    assert stepper.children[1].children[3] is stepper.slider
    assert stepper.play_link.source == (stepper.play, "value")
    assert stepper.play_link.target == (stepper.slider, "value")
    assert "pflow-message" in stepper.message._dom_classes
