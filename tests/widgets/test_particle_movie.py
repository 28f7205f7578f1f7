"""ParticleMovie, headless: FigureWidget state is checked in Python, no browser needed."""

from __future__ import annotations

import html
import math

import ipywidgets as widgets
import numpy as np
import pytest

from pflow_explore.widgets.particle_movie import (
    ParticleMovie,
    default_arrow_scale,
    default_color_range,
)

T, N, BOX = 6, 40, 8.0
SLIDERS = (
    widgets.IntSlider,
    widgets.FloatSlider,
    widgets.FloatLogSlider,
    widgets.IntRangeSlider,
    widgets.FloatRangeSlider,
    widgets.SelectionSlider,
    widgets.SelectionRangeSlider,
)


def movie_data(t=T, n=N, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-BOX / 2, BOX / 2, size=(t, n, 2))
    colors = rng.gamma(2.0, 1.0, size=(t, n))
    currents = rng.normal(size=(t, n, 2))
    return x, colors, currents


@pytest.fixture
def movie():
    x, c, v = movie_data()
    return ParticleMovie(x, c, v, box=BOX, times=np.linspace(0, 1, T), arrow_scale=0.5)


def in_page_order(widget):
    """Every widget inside ``widget`` in the order the page shows them."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from in_page_order(child)


def shown(label) -> str:
    """The text of a message label, HTML entities decoded."""
    return html.unescape(label.value)


def with_nan(a):
    a = a.copy()
    a[1, 3, 0] = np.nan
    return a


def figure_arrays(fig):
    return [(np.asarray(t.x, dtype=float), np.asarray(t.y, dtype=float)) for t in fig.data]


def test_first_picture_is_frame_zero_with_fixed_colour_range(movie):
    x, c, _ = movie_data()
    arrows, particles = movie.figure.data
    np.testing.assert_allclose(particles.x, x[0, :, 0], rtol=1e-6)
    np.testing.assert_allclose(particles.marker.color, c[0], rtol=1e-6)
    lo, hi = np.percentile(c, [1, 99])  # over ALL frames, not frame 0 only
    assert particles.marker.cmin == pytest.approx(lo, rel=1e-5)
    assert particles.marker.cmax == pytest.approx(hi, rel=1e-5)
    assert particles.marker.colorbar.title.text == "local EPR"
    assert movie.slider.max == T - 1 and movie.play.max == T - 1
    shape = movie.figure.layout.shapes[0]  # the box outline, centred like the simulator
    assert (shape.x0, shape.x1, shape.y0, shape.y1) == (-BOX / 2, BOX / 2, -BOX / 2, BOX / 2)
    # a frontend that connects later (Voila) builds the figure from this state
    state = {t["name"]: t for t in movie.figure.get_state()["_widget_data"]}
    assert "x" in state["particles"] and "x" in state["current"]


def test_stepping_shows_the_frame_its_colours_and_keeps_the_range(movie):
    x, c, _ = movie_data()
    fig = movie.figure
    traces = fig.data
    cmin, cmax = fig.data[1].marker.cmin, fig.data[1].marker.cmax
    sent = []
    names = ["_py2js_update", "_py2js_restyle", "_py2js_relayout", "_py2js_addTraces"]
    fig.observe(lambda change: change["new"] and sent.append(change["name"]), names=names)
    movie.step_to(4)
    assert sent == ["_py2js_update"]  # one batched message per frame, no new traces
    assert movie.figure is fig and all(a is b for a, b in zip(fig.data, traces, strict=True))
    np.testing.assert_allclose(fig.data[1].x, x[4, :, 0], rtol=1e-6)
    np.testing.assert_allclose(fig.data[1].y, x[4, :, 1], rtol=1e-6)
    np.testing.assert_allclose(fig.data[1].marker.color, c[4], rtol=1e-6)
    assert (fig.data[1].marker.cmin, fig.data[1].marker.cmax) == (cmin, cmax)
    assert movie.slider.value == 4 and movie.time_label.value == "t = 0.800"
    mean, total = c[4].mean(), c[4].sum()
    assert f"mean per particle = {mean:.4g}" in movie.readout.value
    assert f"total = {total:.4g}" in movie.readout.value


def test_arrows_start_at_the_particles_and_end_at_scale_times_current(movie):
    x, _, v = movie_data()
    movie.step_to(3)
    seg = np.stack([movie.figure.data[0].x, movie.figure.data[0].y], axis=1).reshape(N, 3, 2)
    np.testing.assert_allclose(seg[:, 0], x[3], rtol=1e-6)
    np.testing.assert_allclose(seg[:, 1], x[3] + 0.5 * v[3], rtol=1e-5, atol=1e-6)
    assert np.isnan(seg[:, 2]).all()
    assert movie.set_arrow_every(3) and movie.arrow_every_box.value == 3
    seg = np.stack([movie.figure.data[0].x, movie.figure.data[0].y], axis=1).reshape(-1, 3, 2)
    np.testing.assert_allclose(seg[:, 0], x[3, ::3], rtol=1e-6)
    assert movie.set_arrow_scale(2.0) and movie.arrow_scale_box.value == 2.0
    seg = np.stack([movie.figure.data[0].x, movie.figure.data[0].y], axis=1).reshape(-1, 3, 2)
    np.testing.assert_allclose(seg[:, 1] - seg[:, 0], 2.0 * v[3, ::3], rtol=1e-4, atol=1e-5)


def test_the_first_slider_drives_the_figure_and_buttons_step(movie):
    x, _, _ = movie_data()
    first = next(w for w in in_page_order(movie) if isinstance(w, SLIDERS))
    assert first is movie.slider  # the browser test moves the first .widget-slider
    movie.slider.value = 2  # what the browser does
    np.testing.assert_allclose(movie.figure.data[1].x, x[2, :, 0], rtol=1e-6)
    movie.next_button.click()
    assert movie.step == 3
    movie.prev_button.click()
    movie.prev_button.click()
    assert movie.step == 1
    movie.step_to(T - 1)
    movie.next_button.click()  # stays at the end, no error
    assert movie.step == T - 1 and movie.message.value == ""
    with pytest.raises(ValueError, match=r"frame must be an integer in \[0, 5\]"):
        movie.step_to(T)


@pytest.mark.parametrize(
    "control, value, words",
    [
        ("arrow_scale_box", -1.0, "arrow scale must be a finite number > 0"),
        ("arrow_scale_box", 0.0, "arrow scale"),
        ("arrow_every_box", -1, "arrow every"),
        ("arrow_every_box", N + 1, f"[1, {N}]"),
    ],
)
def test_bad_control_values_show_a_message_and_keep_the_picture(movie, control, value, words):
    movie.step_to(2)
    before = figure_arrays(movie.figure)
    box = getattr(movie, control)
    assert "pflow-input" in box._dom_classes
    box.value = value  # typed into the box
    assert words in shown(movie.message) and "Keeping the previous" in shown(movie.message)
    for (x, y), trace in zip(before, movie.figure.data, strict=True):
        np.testing.assert_array_equal(np.asarray(trace.x, dtype=float), x)
        np.testing.assert_array_equal(np.asarray(trace.y, dtype=float), y)
    movie.next_button.click()  # still steps
    assert movie.step == 3
    box.value = 2  # a good value clears the message
    assert movie.message.value == ""


def test_the_first_validated_input_rejects_minus_one(movie):
    first = next(w for w in in_page_order(movie) if "pflow-input" in w._dom_classes)
    first.value = -1
    assert movie.message.value != "" and "pflow-message" in movie.message._dom_classes


def test_colour_range_control_sets_cmin_cmax_and_rejects_an_empty_range(movie):
    assert movie.set_color_range(0.5, 3.0)
    assert (movie.figure.data[1].marker.cmin, movie.figure.data[1].marker.cmax) == (0.5, 3.0)
    assert tuple(movie.color_slider.value) == (0.5, 3.0)
    movie.color_slider.value = (1.0, 2.0)  # the range slider drives it too
    assert movie.color_range == (1.0, 2.0) and movie.figure.data[1].marker.cmax == 2.0
    assert not movie.set_color_range(2.0, 2.0)
    assert "min < max" in shown(movie.message)
    assert movie.figure.data[1].marker.cmax == 2.0
    assert not movie.set_color_range(math.nan, 1.0)


@pytest.mark.parametrize(
    "make_bad, words",
    [
        (lambda x, c, v: (with_nan(x), c, v), "frames contain NaN"),
        (lambda x, c, v: (x[..., :1], c, v), "frames must have shape (T, N, 2)"),
        (lambda x, c, v: (x, c[:, :-1], v), "colors must have shape (T, N)"),
        (lambda x, c, v: (x, np.where(c > 3, np.inf, c), v), "colors contain NaN"),
        (lambda x, c, v: (x, c, v[:-1]), "currents must have shape (T, N, 2)"),
    ],
)
def test_bad_data_shows_a_message_and_keeps_the_last_good_picture(movie, make_bad, words):
    movie.step_to(2)
    before = figure_arrays(movie.figure)
    colors = np.asarray(movie.figure.data[1].marker.color).copy()
    assert movie.set_data(*make_bad(*movie_data(seed=1))) is False  # no exception
    assert words in shown(movie.message)
    assert movie.step == 2 and movie.slider.max == T - 1
    for (x, y), trace in zip(before, movie.figure.data, strict=True):
        np.testing.assert_array_equal(np.asarray(trace.x, dtype=float), x)
        np.testing.assert_array_equal(np.asarray(trace.y, dtype=float), y)
    np.testing.assert_array_equal(movie.figure.data[1].marker.color, colors)


def test_set_data_swaps_the_movie_in_the_same_figure(movie):
    fig = movie.figure
    movie.step_to(5)
    x, c, v = movie_data(t=3, n=25, seed=2)
    assert movie.set_data(x, c, v) is True and movie.figure is fig
    assert movie.slider.max == 2 and movie.step == 2
    np.testing.assert_allclose(fig.data[1].marker.color, c[2], rtol=1e-6)
    assert len(fig.data[0].x) == 3 * 25
    spacing = 1.06 * BOX / 5  # sqrt(drawn area / N): the box padded by 3 % a side, N = 25
    assert movie.arrow_scale == pytest.approx(default_arrow_scale(v.astype(np.float32), spacing))


def test_without_colours_or_currents_and_positions_fold_into_the_box():
    x, _, _ = movie_data()
    shifted = x + np.array([BOX, -3 * BOX])  # the same periodic configuration
    movie = ParticleMovie(shifted, box=BOX)
    np.testing.assert_allclose(movie.figure.data[1].x, x[0, :, 0], atol=1e-5)
    np.testing.assert_allclose(movie.figure.data[1].y, x[0, :, 1], atol=1e-5)
    assert len(movie.figure.data[0].x) == 0 and movie.arrow_scale_box.disabled
    assert movie.color_slider.disabled and movie.figure.data[1].marker.showscale is False
    open_space = ParticleMovie(x[:, :5] * 3, times=None)
    lo, hi = open_space.figure.layout.xaxis.range
    assert lo <= 3 * x[:, :5, 0].min() and hi >= 3 * x[:, :5, 0].max()


def test_defaults_and_constructor_errors():
    rng = np.random.default_rng(3)
    c = rng.normal(size=(4, 100))
    c[0, 0] = 1e6  # one outlier does not stretch the colour range
    lo, hi = default_color_range(c)
    assert hi < 10 and lo > -10
    v = rng.normal(size=(4, 100, 2))
    scale = default_arrow_scale(v, 0.3)
    assert np.percentile(np.linalg.norm(scale * v, axis=-1), 95) == pytest.approx(0.24)
    x, cols, cur = movie_data()
    with pytest.raises(ValueError, match="box must be None or a finite side length > 0"):
        ParticleMovie(x, box=-1.0)
    with pytest.raises(ValueError, match="times must have shape"):
        ParticleMovie(x, times=np.arange(T + 1))
    with pytest.raises(ValueError, match="arrow scale"):
        ParticleMovie(x, cols, cur, arrow_scale=0)
    with pytest.raises(ValueError, match="colors must have shape"):
        ParticleMovie(x, cols.T)
