"""ReflowExplorer, headless, on the exact Gaussian rectified flows of theory.rectified_flow.

What is exactly true there and checked: 2-RF paths are straight lines from z0 to
mu + sigma z0, so any number of Euler steps lands on the exact end points (energy distance 0,
S = 0) and no two paths cross; one Euler step of 1-RF sends every start to mu; the 1-RF
straightness on the 64-step reference approaches d sigma (2 - pi/2). Bad input shows a
message and leaves the figure's data unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from ipywidgets import SelectionSlider

from pflow_explore.metrics import energy_distance
from pflow_explore.theory.rectified_flow import (
    gaussian_2rf_velocity,
    gaussian_rf_straightness,
    gaussian_rf_velocity,
)
from pflow_explore.trajectories import crossings
from pflow_explore.widgets.redraw_budget import (
    MAX_DRAWN_LINE_POINTS,
    MAX_DRAWN_MARKERS,
    evenly_spaced,
)
from pflow_explore.widgets.reflow_explorer import ReflowExplorer, euler_paths

F64 = torch.float64
MU = torch.tensor([2.5, 1.0], dtype=F64)
SIGMA = 0.6
N = 60


def moment_matched(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=F64)
    z = z - z.mean(0)
    return z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / n)).T


class Counted:
    """A velocity field that counts its calls (to see the cache work)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


@pytest.fixture(scope="module")
def z0():
    return moment_matched(N, 0)


def fields():
    return {
        "1-RF": Counted(lambda x, t: gaussian_rf_velocity(x, t, MU, SIGMA)),
        "2-RF": Counted(lambda x, t: gaussian_2rf_velocity(x, t, MU, SIGMA)),
    }


@pytest.fixture(scope="module")
def explorer(z0):
    exact_end = MU + SIGMA * z0
    return ReflowExplorer(
        fields(),
        z0,
        target=exact_end,
        one_step={"distilled": lambda z: MU + SIGMA * z},
        steps_options=(1, 2, 4, 8),
        n_shown=30,
    )


def data(w: ReflowExplorer) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(t.x, dtype=float), np.asarray(t.y, dtype=float)) for t in w.figure.data]


def same(a, b) -> bool:
    return all(
        np.array_equal(x1, x2, equal_nan=True) and np.array_equal(y1, y2, equal_nan=True)
        for (x1, y1), (x2, y2) in zip(a, b, strict=True)
    )


def test_layout_first_slider_is_steps(explorer):
    first_row = explorer.children[0].children
    assert first_row[0] is explorer.steps_slider
    assert isinstance(explorer.steps_slider, SelectionSlider)
    assert "pflow-input" in explorer.shown_box._dom_classes
    assert isinstance(explorer.figure, go.FigureWidget)  # a LiveFigure is one
    assert explorer.rounds == ("1-RF", "2-RF", "distilled")
    assert explorer.message.value == ""


def test_2rf_one_step_is_exact_and_straight(explorer, z0):
    assert explorer.set_round("2-RF") and explorer.set_steps(1)
    state = explorer.state
    exact_end = MU + SIGMA * z0
    torch.testing.assert_close(state.end_points, exact_end)
    assert state.energy < 1e-8  # cdist's matrix-product distances: ~1e-8 noise at zero
    assert state.crossing_count == 0
    assert state.straightness < 1e-20
    assert state.endpoint_error < 1e-12
    ends = explorer.figure.data[-1]
    np.testing.assert_allclose(np.asarray(ends.x), exact_end[:, 0].numpy())
    assert "crossing pairs among the 30 shown paths: 0" in explorer.readout.value
    for steps in (2, 8):  # Euler on a field constant along paths is exact at any step count
        explorer.set_steps(steps)
        torch.testing.assert_close(explorer.state.end_points, exact_end)
        assert explorer.state.crossing_count == 0


def test_1rf_one_step_collapses_and_reference_straightness(explorer, z0):
    assert explorer.set_round("1-RF") and explorer.set_steps(1)
    state = explorer.state
    torch.testing.assert_close(state.end_points, MU.expand(N, 2))
    # energy distance of the collapsed set {mu} to the exact end points, written out
    y = (MU + SIGMA * z0).numpy()
    cross = np.linalg.norm(y - MU.numpy(), axis=1).mean()
    within = np.linalg.norm(y[:, None] - y[None], axis=-1).mean()
    assert state.energy == pytest.approx(2 * cross - within, rel=1e-7)
    assert state.crossing_count == 0  # all paths share the end point mu: no proper crossing
    # 64 Euler steps: the discrete S of the Euler path, close to the flow's S
    assert state.straightness == pytest.approx(gaussian_rf_straightness(2, SIGMA), rel=0.05)
    # mean distance of one-step end points to the 64-step ones
    ref = euler_paths(lambda x, t: gaussian_rf_velocity(x, t, MU, SIGMA), z0, 64)[-1]
    assert state.endpoint_error == pytest.approx(float((ref - MU).norm(dim=-1).mean()))


def test_crossings_drawn_red_and_highlight_toggle(explorer):
    explorer.set_round("1-RF")
    explorer.set_steps(8)
    state = explorer.state
    traj = state.trajectory.numpy()
    _, lines, red, starts, _ = explorer.figure.data
    red_paths = set(np.unique(state.pairs).tolist())
    assert red_paths <= set(state.shown.tolist())
    # every drawn red point belongs to one of the crossing paths, NaN breaks between them
    xs = np.asarray(red.x, dtype=float)
    assert np.isnan(xs).sum() == len(red_paths)
    expected = np.concatenate([np.append(traj[:, j, 0], np.nan) for j in sorted(red_paths)])
    np.testing.assert_array_equal(xs, expected) if red_paths else None
    assert len(np.asarray(starts.x)) == len(state.shown) == 30
    assert explorer.set_highlight(False)
    assert len(np.asarray(explorer.figure.data[2].x)) == 0
    assert np.isnan(np.asarray(explorer.figure.data[1].x, dtype=float)).sum() == 30
    explorer.set_highlight(True)


def test_moving_the_slider_changes_the_figure_and_caches(z0):
    f = fields()
    w = ReflowExplorer(f, z0, target=None, steps_options=(1, 2, 4, 8), n_shown=10)
    before = data(w)
    w.steps_slider.value = 4  # as the browser does
    assert not same(before, data(w))
    assert w.state.steps == 4 and w.state.energy is None
    calls = f["1-RF"].calls
    w.steps_slider.value = 1
    w.steps_slider.value = 4
    assert f["1-RF"].calls == calls  # both cached
    w.round_buttons.value = "2-RF"
    assert w.state.round == "2-RF"


def test_bad_input_shows_a_message_and_keeps_the_picture(explorer):
    explorer.set_round("1-RF")
    explorer.set_steps(2)
    before = data(explorer)
    explorer.shown_box.value = -1  # as typed in the browser
    assert "paths shown must be an integer in [1, 60]" in explorer.message.value
    assert same(before, data(explorer))
    assert not explorer.set_n_shown(10**6)
    assert not explorer.set_steps(3)
    assert "steps must be one of 1, 2, 4, 8" in explorer.message.value
    assert not explorer.set_round("5-RF")
    assert same(before, data(explorer))
    # the slider still works, with the last good number of paths
    explorer.steps_slider.value = 4
    assert not same(before, data(explorer))
    assert explorer.message.value == ""
    assert explorer.shown_box.value == 30


def test_a_failing_field_is_a_message_not_a_traceback(z0):
    def diverging(x, t):
        return x * math.inf

    w = ReflowExplorer(
        {"ok": lambda x, t: gaussian_2rf_velocity(x, t, MU, SIGMA), "bad": diverging}, z0
    )
    before = data(w)
    w.round_buttons.value = "bad"
    assert "diverged" in w.message.value
    assert same(before, data(w))
    assert w.state.round == "ok"


def test_one_step_map_round(explorer, z0):
    assert explorer.set_round("distilled")
    state = explorer.state
    assert state.trajectory.shape == (2, N, 2)
    assert state.straightness is None and state.endpoint_error is None
    assert state.energy < 1e-8  # cdist's matrix-product distances: ~1e-8 noise at zero
    assert "one-step map" in explorer.readout.value
    explorer.set_steps(8)  # the steps do not apply to a map
    assert explorer.state.trajectory.shape == (2, N, 2)


def test_constructor_rejects_bad_arguments(z0):
    with pytest.raises(ValueError, match="z0"):
        ReflowExplorer(fields(), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least one"):
        ReflowExplorer({}, z0)
    with pytest.raises(ValueError, match="steps_options"):
        ReflowExplorer(fields(), z0, steps_options=(0, 2))
    with pytest.raises(ValueError, match="paths shown"):
        ReflowExplorer(fields(), z0, n_shown=0)
    with pytest.raises(ValueError, match="twice"):
        ReflowExplorer(fields(), z0, one_step={"1-RF": lambda z: z})
    with pytest.raises(ValueError, match="max_markers .* must be an integer >= 1"):
        ReflowExplorer(fields(), z0, max_markers=0)
    with pytest.raises(ValueError, match="max_line_points"):
        ReflowExplorer(fields(), z0, max_line_points=2.5)


def drawn_points(fig) -> tuple[int, int]:
    """(markers, line points) the browser redraws when the figure changes."""
    markers = sum(len(t.x) for t in fig.data if "markers" in t.mode)
    lines = sum(len(t.x) for t in fig.data if t.mode == "lines")
    return markers, lines


def test_a_move_draws_at_most_the_caps_and_the_numbers_use_every_sample():
    """Chapter 03's size (300 starts, 600 target samples, 64 paths shown): 964 markers
    before; now evenly spaced subsets within the caps, the numbers on all samples."""
    z0 = moment_matched(300, 1)
    target = MU + SIGMA * moment_matched(600, 2)
    w = ReflowExplorer(fields(), z0, target=target, steps_options=(1, 8, 64), n_shown=64)
    assert drawn_points(w.figure) == (64 + 100 + 200, 64 * 3)  # one step: all 64 paths
    w.steps_slider.value = 64  # a reader's move
    markers, lines = drawn_points(w.figure)
    assert markers <= MAX_DRAWN_MARKERS == 400 and lines <= MAX_DRAWN_LINE_POINTS == 4_000
    assert (markers, lines) == (60 + 100 + 200, 60 * 66)  # whole paths, fewer of them
    state = w.state
    traj = state.trajectory
    assert len(state.shown) == 64 and traj.shape == (65, 300, 2)
    drawn = w.drawn_paths(state)
    np.testing.assert_array_equal(drawn, state.shown[evenly_spaced(64, 60)])
    ends = w.figure.data[-1]
    np.testing.assert_allclose(np.asarray(ends.x), traj[-1, evenly_spaced(300, 100), 0])
    # the numbers: all 300 end points, all 600 target samples, all 64 shown paths
    assert state.energy == pytest.approx(energy_distance(traj[-1], target), rel=1e-9)
    ref = euler_paths(lambda x, t: gaussian_rf_velocity(x, t, MU, SIGMA), z0, 64)[-1]
    assert state.endpoint_error == pytest.approx(float((traj[-1] - ref).norm(dim=-1).mean()))
    assert state.crossing_count == len(crossings(traj[:, state.shown]))
    assert f"crossing pairs among the 64 shown paths: {state.crossing_count}" in w.readout.value
    assert (
        "drawing 60 of 64 shown paths and 100 of 300 end points and 200 of 600 target samples"
        in w.readout.value
    )
    assert w.set_n_shown(300)  # every path shown: a quarter of the markers drawn
    assert len(w.drawn_paths(w.state)) == 60 and drawn_points(w.figure)[0] <= 400
    w.steps_slider.value = 1
    assert len(w.drawn_paths(w.state)) == 100 and drawn_points(w.figure)[0] == 400
