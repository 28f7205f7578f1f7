"""InterpolantExplorer, headless: the heatmap and the arrows against independent closed forms.

For Gaussian endpoints x0 ~ N(m0, C0), x1 ~ N(m1, C1) and x_t = a(t) x0 + b(t) x1 + g(t) z
(card 02_interpolants, "Exact cases"): x_t ~ N(m_t, C_t), m_t = a m0 + b m1,
C_t = a^2 C0 + b^2 C1 + g^2 I, and b(x, t) = m_t' + (a a' C0 + b b' C1 + g g' I) C_t^-1 (x - m_t).
The coefficients a, b, g are written out here, not taken from ``pflow_explore.interpolants``;
densities come from scipy, mixtures' own log_prob from ``datasets.mixture``.
"""

from __future__ import annotations

import html
import math

import ipywidgets as widgets
import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from pflow_explore.datasets.toy2d import eight_gaussians, random_mixture, single_gaussian
from pflow_explore.widgets.interpolant_explorer import InterpolantExplorer

M0, C0 = np.array([-1.0, 0.5]), np.array([[0.5, 0.2], [0.2, 0.3]])
M1, C1 = np.array([1.5, -0.5]), np.array([[0.6, -0.25], [-0.25, 0.4]])
PI = math.pi


def densities():
    return {
        "g0": single_gaussian(M0, C0),
        "g1": single_gaussian(M1, C1),
        "eight": eight_gaussians(),
        "mix": random_mixture(3, generator=torch.Generator().manual_seed(4)),
    }


def coefficients(name: str, t: float, a_scale: float = 1.0):
    """(a, b, g, a', b', g g') of x_t = a x0 + b x1 + g z, written from the card."""
    if name == "linear_sqrt":
        g2 = a_scale * t * (1 - t)
        return 1 - t, t, math.sqrt(g2), -1.0, 1.0, 0.5 * a_scale * (1 - 2 * t)
    if name == "trigonometric_quadratic":
        g, dg = t * (1 - t), 1 - 2 * t
        r, dr = math.sqrt(1 - g * g), -g * dg / math.sqrt(1 - g * g)
        c, s = math.cos(PI * t / 2), math.sin(PI * t / 2)
        return r * c, r * s, g, dr * c - r * s * PI / 2, dr * s + r * c * PI / 2, g * dg
    if name == "encoder_decoder_sin2":
        g, dg = math.sin(PI * t) ** 2, PI * math.sin(2 * PI * t)
        cos2, dcos2 = math.cos(PI * t) ** 2, -PI * math.sin(2 * PI * t)
        lower = t < 0.5
        return (
            cos2 if lower else 0.0,
            0.0 if lower else cos2,
            g,
            dcos2 if lower else 0.0,
            0.0 if lower else dcos2,
            g * dg,
        )
    raise KeyError(name)


def gaussian_marginal(name, t, a_scale=1.0):
    a, b, g, da, db, gdg = coefficients(name, t, a_scale)
    m = a * M0 + b * M1
    c = a * a * C0 + b * b * C1 + g * g * np.eye(2)
    k = a * da * C0 + b * db * C1 + gdg * np.eye(2)
    return m, c, (da * M0 + db * M1), k


def heat(w) -> np.ndarray:
    return np.array(w.figure.data[0].z, dtype=float)


def figure_data(w):
    out = []
    for tr in w.figure.data:
        z = getattr(tr, "z", None)
        out.append([np.array(v, dtype=float) for v in (tr.x, tr.y, z if z is not None else [])])
    return out


def same_data(a, b) -> bool:
    return all(
        np.array_equal(u, v, equal_nan=True)
        for ta, tb in zip(a, b, strict=True)
        for u, v in zip(ta, tb, strict=True)
    )


def first_slider(widget):
    """Depth-first, the first slider among the widget's descendants (DOM order)."""
    if isinstance(widget, widgets.IntSlider | widgets.FloatSlider | widgets.SelectionSlider):
        return widget
    for child in getattr(widget, "children", ()):
        found = first_slider(child)
        if found is not None:
            return found
    return None


@pytest.fixture(scope="module")
def explorer():
    return InterpolantExplorer(
        densities(), "g0", "g1", grid=24, arrows=6, n_samples=40, t=0.3, extent=(-4.0, 4.0)
    )


def test_the_first_slider_is_time_and_moving_it_changes_the_figure(explorer):
    slider = first_slider(explorer)
    assert slider is explorer.time_slider and slider.min == 0 and slider.max == 1
    before = figure_data(explorer)
    slider.value = 0.6  # what the browser does
    assert explorer.t == pytest.approx(0.6)
    after = figure_data(explorer)
    for i in range(3):  # heatmap, arrows and samples all move
        assert not same_data([before[i]], [after[i]])
    assert "pflow-input" in explorer.a_box._dom_classes
    assert "pflow-message" in explorer.message._dom_classes
    explorer.set_time(0.3)


@pytest.mark.parametrize("t", [0.3, 0.75])
@pytest.mark.parametrize(
    "name, interpolant, gamma, a_scale",
    [
        ("linear_sqrt", "linear", "sqrt", 0.7),
        ("trigonometric_quadratic", "trigonometric", "quadratic", 1.0),
        ("encoder_decoder_sin2", "encoder_decoder", "sin2", 1.0),
    ],
)
def test_heatmap_and_velocity_match_the_gaussian_closed_form(
    explorer, t, name, interpolant, gamma, a_scale
):
    assert explorer.set_config(rho0="g0", rho1="g1", interpolant=interpolant, gamma=gamma)
    assert explorer.set_config(a=a_scale) and explorer.set_time(t)
    m, c, dm, k = gaussian_marginal(name, t, a_scale)
    expect = multivariate_normal(m, c).pdf(explorer.grid_points).reshape(24, 24)
    np.testing.assert_allclose(heat(explorer), expect, rtol=1e-6, atol=1e-12)
    x = explorer.arrow_points
    b = dm + (k @ np.linalg.solve(c, (x - m).T)).T
    np.testing.assert_allclose(explorer.picture.vectors, b, rtol=1e-6, atol=1e-9)
    explorer.set_config(interpolant="linear", gamma="sqrt", a=1.0)


def test_the_score_arrows_match_the_gaussian_closed_form(explorer):
    explorer.set_config(rho0="g0", rho1="g1", interpolant="linear", gamma="sqrt", a=1.0)
    explorer.set_time(0.3)
    assert explorer.set_field("s") and explorer.field_toggle.value == "s"
    m, c, _, _ = gaussian_marginal("linear_sqrt", 0.3)
    s = -np.linalg.solve(c, (explorer.arrow_points - m).T).T
    np.testing.assert_allclose(explorer.picture.vectors, s, rtol=1e-6, atol=1e-9)
    # drawn arrows: each shaft along s, no longer than one arrow spacing
    shafts = explorer.picture.field
    cos = (shafts * s).sum(1) / (np.linalg.norm(shafts, axis=1) * np.linalg.norm(s, axis=1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-9)
    assert np.linalg.norm(shafts, axis=1).max() <= explorer.arrow_spacing * (1 + 1e-9)
    explorer.field_toggle.value = "none"  # what the browser does
    assert len(explorer.figure.data[1].x) == 0
    explorer.set_field("b")
    assert len(explorer.figure.data[1].x) == 6 * 6 * 7  # 7 points per arrow


@pytest.mark.parametrize("rho, t", [("eight", 0.0), ("mix", 0.0), ("mix", 1.0)])
def test_heatmap_at_the_ends_is_the_mixture_itself(explorer, rho, t):
    other = "g1" if t == 0 else "g0"
    rho0, rho1 = (rho, other) if t == 0 else (other, rho)
    assert explorer.set_config(rho0=rho0, rho1=rho1, interpolant="trigonometric", gamma="sqrt")
    assert explorer.set_time(t)
    mixture = densities()[rho]
    grid = torch.as_tensor(explorer.grid_points, dtype=torch.float64)
    expect = torch.exp(mixture.log_prob(grid)).numpy().reshape(24, 24)
    np.testing.assert_allclose(heat(explorer), expect, rtol=1e-6, atol=1e-12)
    explorer.set_config(rho0="g0", rho1="g1", interpolant="linear")
    explorer.set_time(0.3)


def test_samples_of_x_t_have_the_gaussian_moments():
    n = 3000
    w = InterpolantExplorer(densities(), "g0", "g1", grid=8, arrows=2, n_samples=n, t=0.4)
    x = w.picture.samples.astype(np.float64)
    m, c, _, _ = gaussian_marginal("linear_sqrt", 0.4)
    se_m = np.sqrt(np.diag(c) / n)
    se_c = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / n)
    assert np.all(np.abs(x.mean(0) - m) < 4 * se_m)
    assert np.all(np.abs(np.cov(x.T) - c) < 4 * se_c)
    np.testing.assert_allclose(w.figure.data[2].x, x[:, 0], rtol=1e-6)
    w.samples_box.value = False
    assert len(w.figure.data[2].x) == 0


def test_one_sided_uses_the_standard_normal_and_says_so(explorer):
    assert explorer.set_config(rho0="eight", rho1="mix", interpolant="one_sided")
    assert "N(0, I)" in explorer.info.value and explorer.rho0_menu.disabled
    explorer.set_time(0.0)
    expect = multivariate_normal(np.zeros(2), np.eye(2)).pdf(explorer.grid_points)
    np.testing.assert_allclose(heat(explorer).ravel(), expect, rtol=1e-6, atol=1e-12)
    assert explorer.set_config(interpolant="mirror", gamma="sqrt")
    assert "mirror" in explorer.info.value
    explorer.set_time(0.0)  # mirror: x_0 = x1, so rho_0 = rho1
    mix = densities()["mix"]
    grid = torch.as_tensor(explorer.grid_points, dtype=torch.float64)
    np.testing.assert_allclose(
        heat(explorer).ravel(), torch.exp(mix.log_prob(grid)).numpy(), rtol=1e-6, atol=1e-12
    )
    assert explorer.set_config(rho0="g0", rho1="g1", interpolant="linear")
    assert explorer.info.value == "" and not explorer.rho0_menu.disabled
    explorer.set_time(0.3)


@pytest.mark.parametrize(
    "act, words",
    [
        (lambda w: setattr(w.a_box, "value", -1.0), "γ a must be > 0"),
        (lambda w: w.set_config(a=0.0), "γ a must be > 0"),
        (lambda w: w.set_config(interpolant="trigonometric", gamma="sin2"), "gamma(t) < 1"),
        (lambda w: w.set_config(rho1="nope"), "rho1 must be one of"),
        (lambda w: w.set_time(1.5), "t must be a number in [0, 1]"),
        (lambda w: w.set_field("v"), "field must be one of"),
    ],
)
def test_bad_input_shows_a_message_and_keeps_the_picture(explorer, act, words):
    explorer.set_config(rho0="g0", rho1="g1", interpolant="linear", gamma="sqrt", a=1.0)
    explorer.set_time(0.3)
    before, config = figure_data(explorer), explorer.config
    act(explorer)  # never raises
    assert words in html.unescape(explorer.message.value)
    assert same_data(before, figure_data(explorer)) and explorer.config is config
    explorer.time_slider.value = 0.55  # time still works, with the last valid setting
    assert not same_data(before, figure_data(explorer))
    assert explorer.t == pytest.approx(0.55)
    # repaired: the message goes
    explorer.set_config(interpolant="linear", gamma="sqrt", a=1.0, rho1="g1")
    explorer.set_time(0.3)
    assert explorer.message.value == ""


def test_a_time_without_a_density_is_a_message():
    """Encoder-decoder with gamma = 0 squeezes x_t to the point 0 at t = 1/2."""
    w = InterpolantExplorer(
        densities(),
        "g0",
        "g1",
        interpolant="encoder_decoder",
        gamma="zero",
        grid=8,
        arrows=2,
        t=0.2,
    )
    w.set_time(0.2)
    before = figure_data(w)
    assert not w.set_time(0.5)
    # the theory layer calls x_t degenerate there, or rho_t underflows on the window
    said = html.unescape(w.message.value)
    assert "degenerate" in said or "point mass" in said
    assert "previous picture" in said and same_data(before, figure_data(w))
    assert w.set_time(0.3) and w.message.value == ""


def test_bad_constructor_arguments_raise_clear_value_errors():
    with pytest.raises(ValueError, match="densities must be"):
        InterpolantExplorer({}, "a", "b")
    with pytest.raises(ValueError, match="rho0 must be one of"):
        InterpolantExplorer(densities(), "nope", "g1", grid=4)
    with pytest.raises(ValueError, match="γ a must be > 0"):
        InterpolantExplorer(densities(), "g0", "g1", gamma_scale=-1.0, grid=4)
    with pytest.raises(ValueError, match="unknown interpolant"):
        InterpolantExplorer(densities(), "g0", "g1", interpolant="spline", grid=4)


def test_moving_back_draws_the_kept_picture_without_evaluating(monkeypatch):
    """A picture is kept per (t, field) of the setting shown: moving the slider back draws
    exactly what a fresh evaluation draws and evaluates nothing; a new setting forgets them."""
    w = InterpolantExplorer(densities(), "g0", "g1", grid=24, arrows=6, n_samples=40, t=0.3)
    w.time_slider.value = 0.31
    moved = figure_data(w)
    w.time_slider.value = 0.3
    calls = []
    fields = type(w.fields)
    for name in ("log_prob", "velocity", "score", "sample"):
        real = getattr(fields, name)
        monkeypatch.setattr(
            fields, name, lambda *a, real=real, **k: calls.append(1) or real(*a, **k)
        )
    w.time_slider.value = 0.31
    assert calls == [] and same_data(figure_data(w), moved)
    assert w.set_config(interpolant="trigonometric")
    calls.clear()
    w.time_slider.value = 0.3  # the picture kept for linear is not the trig one
    assert calls and w.config.interpolant == "trigonometric"
    fresh = InterpolantExplorer(
        densities(), "g0", "g1", interpolant="trigonometric", grid=24, arrows=6, n_samples=40, t=0.3
    )
    assert np.array_equal(heat(w), heat(fresh))
