"""EPRSweep, headless: FigureWidget state is checked in Python, no browser needed."""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
import pytest

from pflow_explore.widgets.epr_sweep import (
    OUTSIDE_COLOR,
    UNDECIDED_COLOR,
    WITHIN_COLOR,
    EPRSweep,
    relative_error,
)

GAMMA, A, EPS = 1.0, 1.5, 0.5
V0 = np.array([0.5, 1.0, 2.0, 4.0])
OFF = np.array([1.03, 0.92, 1.15, 0.99])  # learned / exact


def trapped_epr(v0: float) -> float:
    """Card 12: total EPR of the trapped AOUP per dimension, gamma v0^2 / (eps (A + gamma))."""
    return GAMMA * v0**2 / (EPS * (A + GAMMA))


def learned_values():
    return np.array([trapped_epr(v) for v in V0]) * OFF


def per_particle(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(trapped_epr(v), 0.5, size=200) for v in V0]


@pytest.fixture
def sweep():
    return EPRSweep(
        V0,
        trapped_epr,
        learned_values(),
        extra={"g-part": 0.4 * learned_values()},
        detail=per_particle(),
    )


def shown(label) -> str:
    return html.unescape(label.value)


def traces(w):
    return {t.name: t for t in w.figure.data}


def learned_colors(w):
    t = traces(w)["learned"]
    order = np.argsort(np.asarray(t.x))  # points are drawn in v0 order
    return [t.marker.color[j] for j in order]


def test_curves_hold_the_exact_function_learned_values_and_band(sweep):
    t = traces(sweep)
    grid = np.asarray(t["exact"].x)
    assert grid[0] == V0.min() and grid[-1] == V0.max() and len(grid) > 50
    np.testing.assert_allclose(t["exact"].y, [trapped_epr(v) for v in grid], rtol=1e-12)
    np.testing.assert_allclose(t["learned"].y, learned_values())
    np.testing.assert_allclose(t["tolerance band"].y, 1.1 * np.asarray(t["exact"].y))
    np.testing.assert_allclose(t["band low"].y, 0.9 * np.asarray(t["exact"].y))
    np.testing.assert_allclose(t["g-part"].y, 0.4 * learned_values())
    # errors computed independently: |learned / exact - 1|
    np.testing.assert_allclose(sweep.relative_errors, OFF - 1, rtol=1e-10)
    expected = [WITHIN_COLOR if abs(o - 1) <= 0.1 else OUTSIDE_COLOR for o in OFF]
    assert learned_colors(sweep) == expected
    assert "3 of 4 learned values within 10 %" in shown(sweep.summary)
    assert "largest |relative error| = 15.00 % at v0 = 2" in shown(sweep.summary)
    state = {d["name"]: d for d in sweep.figure.get_state()["_widget_data"]}
    assert "x" in state["picked"]  # a frontend connecting later sees the first picture


def test_the_first_slider_picks_a_sweep_value_and_moves_the_ring(sweep):
    sliders = (widgets.SelectionSlider, widgets.IntSlider, widgets.FloatRangeSlider)
    first = next(w for w in _in_page_order(sweep) if isinstance(w, sliders))
    assert first is sweep.slider
    assert [label for label, _ in sweep.slider.options] == ["0.5", "1", "2", "4"]
    ring = traces(sweep)["picked"]
    assert (ring.x[0], ring.y[0]) == (0.5, pytest.approx(learned_values()[0]))
    sweep.slider.value = 2  # what the browser does
    assert sweep.index == 2 and ring.x[0] == 2.0
    assert ring.y[0] == pytest.approx(learned_values()[2])
    text = shown(sweep.readout)
    assert f"exact EPR = {trapped_epr(2.0):.4g}" in text
    assert "relative error = +15.00 % (outside the 10 % tolerance)" in text
    counts = np.asarray(traces(sweep)["per-particle EPR"].y)
    every = np.concatenate(per_particle())
    edges = np.linspace(every.min(), every.max(), 31)
    np.testing.assert_array_equal(counts, np.histogram(per_particle()[2], bins=edges)[0])
    sweep.set_v0(4.0)
    assert sweep.slider.value == 3 and traces(sweep)["picked"].x[0] == 4.0
    with pytest.raises(ValueError, match="not in the sweep"):
        sweep.set_v0(3.0)
    with pytest.raises(ValueError, match=r"index must be an integer in \[0, 3\]"):
        sweep.set_index(4)


def _in_page_order(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _in_page_order(child)


def test_tolerance_recolours_points_and_bad_values_show_a_message(sweep):
    first_input = next(w for w in _in_page_order(sweep) if "pflow-input" in w._dom_classes)
    assert first_input is sweep.tolerance_box
    sweep.tolerance_box.value = 20.0
    assert learned_colors(sweep) == [WITHIN_COLOR] * 4
    np.testing.assert_allclose(
        traces(sweep)["tolerance band"].y, 1.2 * np.asarray(traces(sweep)["exact"].y)
    )
    before = [np.asarray(t.y, dtype=float).copy() for t in sweep.figure.data]
    colors = learned_colors(sweep)
    sweep.tolerance_box.value = -1.0  # typed into the box
    assert "tolerance must be a percentage >= 0" in shown(sweep.message)
    assert sweep.tolerance == 20.0 and learned_colors(sweep) == colors
    for y, t in zip(before, sweep.figure.data, strict=True):
        np.testing.assert_array_equal(np.asarray(t.y, dtype=float), y)
    sweep.slider.value = 1  # the slider still works
    assert sweep.index == 1
    assert sweep.set_tolerance(5.0) and sweep.message.value == ""
    assert learned_colors(sweep) == [WITHIN_COLOR, OUTSIDE_COLOR, OUTSIDE_COLOR, WITHIN_COLOR]
    assert not sweep.set_tolerance(float("nan"))


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(learned=np.array([1.0, np.nan, 2.0, 3.0])), "learned contain NaN"),
        (dict(learned=np.ones(3)), "learned must have shape (m,) = (4,)"),
        (dict(learned=np.ones(4), extra={"other": np.ones(4)}), "extra must name the curves"),
        (dict(learned=np.ones(4), detail=[np.ones(3)] * 3), "detail must hold one 1-D array"),
        (dict(learned=np.ones(4), exact=np.ones(5)), "exact must have shape"),
    ],
)
def test_bad_values_show_a_message_and_keep_the_picture(sweep, bad, words):
    before = [np.asarray(t.y, dtype=float).copy() for t in sweep.figure.data]
    assert sweep.set_values(**bad) is False
    assert words in shown(sweep.message) and "previous values" in shown(sweep.message)
    for y, t in zip(before, sweep.figure.data, strict=True):
        np.testing.assert_array_equal(np.asarray(t.y, dtype=float), y)


def test_set_values_swaps_learned_values_and_keeps_the_exact_curve(sweep):
    exact_before = np.asarray(traces(sweep)["exact"].y).copy()
    better = np.array([trapped_epr(v) for v in V0]) * 1.01
    assert sweep.set_values(better) is True
    np.testing.assert_allclose(traces(sweep)["learned"].y, better)
    np.testing.assert_array_equal(traces(sweep)["exact"].y, exact_before)
    assert learned_colors(sweep) == [WITHIN_COLOR] * 4
    assert "4 of 4" in shown(sweep.summary)


def test_array_exact_none_exact_and_zero_exact():
    exact = np.array([trapped_epr(v) for v in V0])
    w = EPRSweep(V0, exact, exact * OFF, parameter_label="phi", quantity_label="g-part EPR")
    np.testing.assert_allclose(traces(w)["exact"].y, exact)
    assert w.slider.description == "phi" and w.figure.layout.xaxis.title.text == "phi"
    assert "g-part EPR" in shown(w.readout)
    w = EPRSweep(V0, None, exact)
    assert learned_colors(w) == [UNDECIDED_COLOR] * 4
    assert "No exact values" in shown(w.summary) and len(traces(w)["exact"].x) == 0
    zero_first = np.array([0.0, 1.0, 2.0])
    w = EPRSweep(zero_first, lambda v: v**2, np.array([0.1, 1.05, 4.0]))
    assert learned_colors(w)[0] == UNDECIDED_COLOR
    assert "relative error undefined (exact = 0)" in shown(w.readout)
    np.testing.assert_allclose(relative_error(np.array([2.0]), np.array([-4.0])), [1.5])


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="v0 values must be at least one, all distinct"):
        EPRSweep([1.0, 1.0], None, [1.0, 2.0])
    with pytest.raises(ValueError, match="learned must have shape"):
        EPRSweep(V0, None, [1.0])
    with pytest.raises(ValueError, match=r"exact\(v0 = 2\) failed"):
        EPRSweep(V0, lambda v: 1 / (v - 2.0), np.ones(4))
    with pytest.raises(ValueError, match="tolerance must be a percentage"):
        EPRSweep(V0, None, np.ones(4), tolerance=-5)
    with pytest.raises(ValueError, match="v0 contain NaN"):
        EPRSweep([1.0, np.nan], None, [1.0, 2.0])
