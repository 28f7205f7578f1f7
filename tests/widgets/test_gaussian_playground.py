"""GaussianPlayground, headless: the drawn data against closed forms computed here with numpy
(matrix square roots of Sigma + sigma^2 I), and against GaussianFlow built from Sigma itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget_link import Link

from pflow_explore.theory.gaussian_flow import GaussianFlow
from pflow_explore.widgets import GaussianPlayground
from pflow_explore.widgets import gaussian_playground as GP
from pflow_explore.widgets.gaussian_playground import TRACES

TRACE = {name: k for k, name in enumerate(TRACES)}
SIGMAS = np.array([3.0, 2.2, 1.5, 1.0, 0.6, 0.3, 0.1, 0.0])
ABARS = np.array([0.01, 0.05, 0.15, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0])
MEAN = (0.7, -0.4, 0.3)


@pytest.fixture(autouse=True)
def full_bundle(monkeypatch):
    """3D as served by plotly's full bundle (a built lean bundle has no scatter3d)."""
    monkeypatch.setattr(GP, "can_draw", lambda trace_type: True)


@pytest.fixture
def playground():
    return GaussianPlayground(
        eigenvalues=(3.0, 0.4, 1.2), mean=MEAN, n_paths=4, sigmas=SIGMAS, abars=ABARS
    )


def rot2(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def rot3(deg, tilt):
    rz, rx = np.eye(3), np.eye(3)
    rz[:2, :2] = rot2(deg)
    rx[1:, 1:] = rot2(tilt)
    return rz @ rx


def sym_fn(matrix, fn):
    """fn applied to the eigenvalues of a symmetric matrix."""
    w, v = np.linalg.eigh(matrix)
    return (v * fn(w)) @ v.T


def closed_form(cov, mean, x_T, mode, start, level):
    """x(level) from x_T (n, d) and E[x0 | x(level)] (n, d), by matrix functions of Sigma."""
    eye = np.eye(len(mean))
    if mode == "VE":
        to = sym_fn(cov + level**2 * eye, np.sqrt) @ sym_fn(cov + start**2 * eye, lambda w: w**-0.5)
        x = mean + (x_T - mean) @ to.T
        est = mean + (x - mean) @ np.linalg.solve(cov + level**2 * eye, cov).T
        return x, est
    a, a_T = level, start
    to = sym_fn(eye + (cov - eye) * a, np.sqrt) @ sym_fn(eye + (cov - eye) * a_T, lambda w: w**-0.5)
    x = math.sqrt(a) * mean + (x_T - math.sqrt(a_T) * mean) @ to.T
    gain = math.sqrt(a) * np.linalg.solve(a * cov + (1 - a) * eye, cov)  # Sigma symmetric
    est = mean + (x - math.sqrt(a) * mean) @ gain.T
    return x, est


def drawn(playground, name):
    trace = next(t for t in playground.figure.data if t.name == name)
    cols = [trace.x, trace.y] + ([trace.z] if playground.state.dim == 3 else [])
    return np.stack([np.asarray(c, dtype=float) for c in cols], axis=1)


def trace_data(fig):
    return [
        tuple(np.array(getattr(t, k), dtype=float, copy=True) for k in "xyz" if hasattr(t, k))
        for t in fig.data
    ]


def in_order(widget):
    """Every widget under ``widget``, depth first, in display (DOM) order."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from in_order(child)


def frontend_view(fig, name):
    """Trace ``name`` as a frontend connecting now would build it: from the widget state
    (``get_state``), which is what Voila sends when the page opens after the notebook ran."""
    trace = next(t for t in fig.get_state()["_widget_data"] if t["name"] == name)

    def decode(v):
        if isinstance(v, dict):
            return np.frombuffer(v["buffer"], dtype=v["dtype"]).reshape(v["shape"])
        return np.asarray(v, dtype=float)

    return {k: decode(trace[k]) for k in "xyz" if k in trace}


def test_a_frontend_that_connects_later_sees_the_drawn_picture():
    w = GaussianPlayground(n_steps=6, n_paths=3, angle=20)
    for name in ("x_t", "paths", "x_T", "1 sigma", "eigenvectors"):
        seen = frontend_view(w.figure, name)
        assert seen["x"].size > 0
        np.testing.assert_array_equal(seen["x"], w.figure.data[TRACE[name]].x)
        np.testing.assert_array_equal(seen["y"], w.figure.data[TRACE[name]].y)
    w.set_parameters(dim=3)  # the 3D figure is built during a callback: same guarantee
    seen = frontend_view(w.figure, "x_t")
    np.testing.assert_array_equal(seen["z"], w.figure.data[TRACE["x_t"]].z)


def test_browser_contract_first_slider_scrubs_and_first_input_is_validated(playground):
    import ipywidgets as widgets

    sliders = [
        w
        for w in in_order(playground)
        if isinstance(w, widgets.IntSlider | widgets.FloatSlider | widgets.FloatLogSlider)
    ]
    assert sliders[0] is playground.slider
    inputs = [w for w in in_order(playground) if "pflow-input" in w._dom_classes]
    assert inputs[0] is playground.eigenvalue_boxes[0]
    assert isinstance(playground.play_link, Link)
    assert playground.play_link.source == (playground.play, "value")
    assert playground.play_link.target == (playground.slider, "value")
    assert playground.slider.max == playground.play.max == len(SIGMAS) - 1
    assert "pflow-message" in playground.message._dom_classes


def test_figure_and_traces_keep_identity_across_updates(playground):
    fig, traces = playground.figure, playground.figure.data
    before = trace_data(fig)
    playground.step_to(3)
    playground.eigenvalue_boxes[0].value = 2.0
    playground.angle_slider.value = -40
    playground.z_sliders[1].value = -2.0
    playground.mode_toggle.value = "VP"
    playground.resample_button.click()
    playground.slider.value = 5
    assert playground.figure is fig and playground.figure_area.children[0].children[0] is fig
    assert len(fig.data) == len(traces)
    assert all(a is b for a, b in zip(fig.data, traces, strict=True))
    assert any(
        not np.array_equal(a, b, equal_nan=True)
        for old, new in zip(before, trace_data(fig), strict=True)
        for a, b in zip(old, new, strict=True)
    )
    assert playground.message.value == ""


@pytest.mark.parametrize("mode", ["VE", "VP"])
def test_step_data_equal_the_closed_form(playground, mode):
    rng = np.random.default_rng(7 if mode == "VE" else 8)
    lam = rng.uniform(0.1, 4.0, size=2)
    angle = float(rng.uniform(-90, 90))
    z = rng.uniform(-2.5, 2.5, size=2)
    assert playground.set_parameters(eigenvalues=lam, angle=angle, mode=mode, z=z)
    playground.resample(seed=3)
    cov = rot2(angle) @ np.diag(lam) @ rot2(angle).T
    mean = np.array(MEAN[:2])
    grid = SIGMAS if mode == "VE" else ABARS
    zz = playground.z
    np.testing.assert_allclose(zz[0], z)
    x_T = (
        mean + grid[0] * zz
        if mode == "VE"
        else math.sqrt(grid[0]) * mean + math.sqrt(1 - grid[0]) * zz
    )
    np.testing.assert_allclose(drawn(playground, "x_T"), x_T, rtol=1e-5, atol=1e-6)
    flow = GaussianFlow(torch.tensor(mean), torch.tensor(cov))
    for i in (0, 2, 5, len(grid) - 1):
        playground.step_to(i)
        x, est = closed_form(cov, mean, x_T, mode, grid[0], grid[i])
        np.testing.assert_allclose(drawn(playground, "x_t"), x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(drawn(playground, "x0-estimate"), est, rtol=1e-5, atol=1e-5)
        xt = torch.tensor(x_T)
        if mode == "VE":
            direct = flow.ve_solution(xt, grid[0], [grid[i]])[0]
            direct_est = flow.ve_denoiser(direct, grid[i])
        else:
            direct = flow.vp_solution(xt, grid[0], [grid[i]])[0]
            direct_est = flow.vp_denoiser(direct, grid[i])
        np.testing.assert_allclose(drawn(playground, "x_t"), direct, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            drawn(playground, "x0-estimate"), direct_est, rtol=1e-5, atol=1e-5
        )
        so_far = drawn(playground, "so far").reshape(4, i + 2, 2)
        np.testing.assert_allclose(so_far[:, i], x, rtol=1e-5, atol=1e-5)
        assert np.isnan(so_far[:, -1]).all()
    # at the data end the flow has carried x_T to a sample: the estimate is the point itself
    np.testing.assert_allclose(drawn(playground, "x0-estimate"), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["VE", "VP"])
def test_feature_share_readout_matches_the_formula(playground, mode):
    lam = np.array([0.3, 2.5])
    assert playground.set_parameters(eigenvalues=lam, angle=10, mode=mode)
    for i in (1, 4):
        playground.step_to(i)
        if mode == "VE":
            sigma = SIGMAS[i]
            assert f"σ = {sigma:.3f}" in playground.time_label.value
        else:
            sigma = math.sqrt((1 - ABARS[i]) / ABARS[i])
            assert f"ᾱ = {ABARS[i]:.4g}" in playground.time_label.value
        f = np.sqrt(np.sort(lam)[::-1] / (np.sort(lam)[::-1] + sigma**2))
        np.testing.assert_allclose(playground.feature_shares, f, rtol=1e-12)
        assert playground.sigma == pytest.approx(sigma)
        for value in f:
            assert f"f = {value:.3f}" in playground.readout.value
        assert f"= {sigma:.3f}" in playground.readout.value


def test_density_ellipses_and_axes_follow_sigma(playground):
    lam, angle = np.array([2.0, 0.5]), 25.0
    playground.set_parameters(eigenvalues=lam, angle=angle, mode="VE")
    cov = rot2(angle) @ np.diag(lam) @ rot2(angle).T
    mean = np.array(MEAN[:2])
    for name, r in (("1 sigma", 1.0), ("2 sigma", 2.0)):
        pts = drawn(playground, name)
        pts = pts[np.isfinite(pts).all(axis=1)] - mean
        mahalanobis = np.einsum("ni,ij,nj->n", pts, np.linalg.inv(cov), pts)
        np.testing.assert_allclose(mahalanobis, r**2, rtol=1e-5)
    playground.step_to(2)
    pts = drawn(playground, "p_t (1 sigma)")
    pts = pts[np.isfinite(pts).all(axis=1)] - mean
    marginal = cov + SIGMAS[2] ** 2 * np.eye(2)
    np.testing.assert_allclose(
        np.einsum("ni,ij,nj->n", pts, np.linalg.inv(marginal), pts), 1.0, rtol=1e-5
    )
    axes = drawn(playground, "eigenvectors")
    u1 = axes[1] - axes[0]  # the first axis: mu - 2 sqrt(l1) u1 to mu + 2 sqrt(l1) u1
    np.testing.assert_allclose(np.linalg.norm(u1), 4 * math.sqrt(2.0), rtol=1e-5)
    np.testing.assert_allclose(abs(u1 @ rot2(angle)[:, 0]) / np.linalg.norm(u1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_bad_eigenvalue_shows_a_message_and_keeps_the_last_good_picture(playground, bad):
    playground.step_to(2)
    before = trace_data(playground.figure)
    flow = playground.flow
    playground.eigenvalue_boxes[0].value = bad  # what the reader's text box sends
    assert "λ1" in playground.message.value and "(0, 1000]" in playground.message.value
    assert "previous picture" in playground.message.value
    assert playground.flow is flow
    for old, new in zip(before, trace_data(playground.figure), strict=True):
        for a, b in zip(old, new, strict=True):
            np.testing.assert_array_equal(a, b)
    playground.angle_slider.value = 50  # still bad: the message stays, nothing redrawn
    assert "λ1" in playground.message.value and playground.flow is flow
    playground.slider.value = 4  # the old picture still steps
    assert playground.step == 4 and "λ1" in playground.message.value
    x_before = drawn(playground, "x_t")
    playground.eigenvalue_boxes[0].value = 1.5  # good again: redrawn, message cleared
    assert playground.message.value == ""
    assert not np.allclose(drawn(playground, "x_t"), x_before)
    assert set(playground.flow.eigenvalues.tolist()) == {1.5, 0.4}


def test_3d_toggle_draws_scatter3d_with_the_closed_form(playground):
    fig2d = playground.figure
    lam = np.array([2.0, 0.3, 0.9])
    angle, tilt = 35.0, -25.0
    assert playground.set_parameters(eigenvalues=lam, angle=angle, tilt=tilt, dim=3)
    fig3d = playground.figure
    figure_area = playground.figure_area
    assert fig3d is not fig2d
    assert [frame.children[0] for frame in figure_area.children] == [fig2d, fig3d]
    assert [frame.layout.display for frame in figure_area.children] == ["none", None]
    assert {type(t).__name__ for t in fig3d.data} == {"Scatter3d"}
    assert playground.eigenvalue_boxes[2].layout.display is None
    playground.step_to(4)
    cov = rot3(angle, tilt) @ np.diag(lam) @ rot3(angle, tilt).T
    mean = np.array(MEAN)
    x_T = mean + SIGMAS[0] * playground.z
    x, est = closed_form(cov, mean, x_T, "VE", SIGMAS[0], SIGMAS[4])
    np.testing.assert_allclose(drawn(playground, "x_t"), x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(drawn(playground, "x0-estimate"), est, rtol=1e-5, atol=1e-5)
    assert len(playground.feature_shares) == 3
    traces3d = fig3d.data
    playground.angle_slider.value = 10  # within 3D: the same figure, updated in place
    assert playground.figure is fig3d
    assert all(a is b for a, b in zip(fig3d.data, traces3d, strict=True))
    playground.dim_toggle.value = 2  # back to the same 2D figure, redrawn; 3D hidden
    assert playground.figure is fig2d
    assert [frame.layout.display for frame in figure_area.children] == [None, "none"]
    cov2 = rot2(10) @ np.diag(lam[:2]) @ rot2(10).T
    x, _ = closed_form(
        cov2, mean[:2], mean[:2] + SIGMAS[0] * playground.z, "VE", SIGMAS[0], SIGMAS[4]
    )
    np.testing.assert_allclose(drawn(playground, "x_t"), x, rtol=1e-5, atol=1e-5)
    assert playground.eigenvalue_boxes[2].layout.display == "none"
    assert playground.tilt_slider.layout.display == playground.z_sliders[2].layout.display
    shown = [playground.eigenvalue_boxes[:2], playground.z_sliders[:2], [playground.angle_slider]]
    assert all(w.layout.display != "none" for group in shown for w in group)


def test_bad_third_eigenvalue_blocks_the_switch_to_3d(playground):
    fig2d = playground.figure
    playground.eigenvalue_boxes[2].value = -2.0  # hidden in 2D: no effect yet
    assert playground.message.value == ""
    playground.dim_toggle.value = 3
    assert "λ3" in playground.message.value
    assert playground.figure is fig2d and len(playground.figure_area.children) == 1
    assert playground.state.dim == 2


def test_set_parameters_reports_bad_values_without_raising(playground):
    assert playground.set_parameters(mode="VX", angle=12) is False
    assert "mode must be one of VE, VP" in playground.message.value
    assert playground.set_parameters(eigenvalues=("abc", 1.0)) is False
    assert "abc" in playground.message.value
    assert playground.set_parameters(eigenvalues=(1.0, 2.0)) is True
    assert playground.message.value == ""


def test_resample_changes_the_other_paths_only(playground):
    before = drawn(playground, "x_T")
    playground.resample_button.click()
    after = drawn(playground, "x_T")
    np.testing.assert_array_equal(after[0], before[0])  # path 0 follows the sliders
    assert not np.allclose(after[1:], before[1:])


def test_grids_of_different_length_clamp_the_step(playground):
    playground.mode_toggle.value = "VP"
    playground.step_to(len(ABARS) - 1)
    playground.mode_toggle.value = "VE"
    assert playground.slider.max == playground.play.max == len(SIGMAS) - 1
    assert playground.step == len(SIGMAS) - 1 == playground.slider.value
    np.testing.assert_allclose(playground.state.grid, SIGMAS)


def test_default_grids_and_step_bounds():
    w = GaussianPlayground(n_steps=10, n_paths=2)
    assert w.state.grid[0] == pytest.approx(4.0) and w.state.grid[-1] == 0.0
    assert w.n_steps == 10
    with pytest.raises(ValueError, match=r"step must be an integer in \[0, 10\]"):
        w.step_to(11)
    w.next_button.click()
    assert w.step == 1
    w.set_parameters(mode="VP")
    assert 0 < w.state.grid[0] < 1e-3 and w.state.grid[-1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(eigenvalues=(1.0,)), "eigenvalues must hold 2 or 3"),
        (dict(eigenvalues=(1.0, -2.0)), "λ2"),
        (dict(mode="VX"), "mode must be one of VE, VP"),
        (dict(dim=4), "dim must be 2 or 3"),
        (dict(sigmas=[1.0, -0.5]), "sigmas must lie in"),
        (dict(abars=[0.0, 1.0]), "abars must lie in"),
        (dict(n_paths=0), "n_paths"),
    ],
)
def test_bad_constructor_arguments_are_value_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        GaussianPlayground(**kwargs)


def test_without_scatter3d_the_3d_toggle_says_why_and_stays_2d(monkeypatch):
    monkeypatch.setattr(GP, "can_draw", lambda trace_type: trace_type != "scatter3d")
    with pytest.raises(ValueError, match="PFLOW_PLOTLY_BUNDLE=full"):
        GaussianPlayground(dim=3)
    w = GaussianPlayground(eigenvalues=(3.0, 0.4), n_paths=2, sigmas=SIGMAS, abars=ABARS)
    assert "PFLOW_PLOTLY_BUNDLE=full" in w.dim_toggle.tooltips[1]  # said before the click
    before = w.figure.data[TRACE["data"]].x
    w.dim_toggle.value = 3  # the reader's click
    assert w.dim_toggle.value == 2 and w.state.dim == 2 and 3 not in w._figures
    assert "scatter3d" in w.message.value and "make bundle" in w.message.value
    assert np.array_equal(w.figure.data[TRACE["data"]].x, before)
    assert w.set_parameters(dim=3) is False and w.dim_toggle.value == 2
    w.dim_toggle.value = 2
    assert w.set_parameters(eigenvalues=(2.0, 0.5)) and "scatter3d" not in w.message.value


def test_where_3d_draws_its_button_says_nothing_of_bundles(playground):
    assert "bundle" not in playground.dim_toggle.tooltips[1]


def test_can_draw_follows_the_served_bundle(monkeypatch):
    from pflow_explore.widgets import live_figure

    monkeypatch.setattr(live_figure, "served_traces", lambda: frozenset({"scatter", "image"}))
    assert live_figure.can_draw("image") and not live_figure.can_draw("scatter3d")
    monkeypatch.setattr(live_figure, "served_traces", lambda: None)  # plotly's full bundle
    assert live_figure.can_draw("scatter3d")
