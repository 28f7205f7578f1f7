"""TrajectoryExplorer, headless: FigureWidget state is checked in Python, no browser needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget_link import Link

from pflow_explore.viz import density_heatmap_figure
from pflow_explore.widgets import (
    TrajectoryExplorer,
    message_label,
    show_message,
    shown_errors,
)
from pflow_explore.widgets.redraw_budget import (
    MAX_DRAWN_LINE_POINTS,
    MAX_DRAWN_MARKERS,
    evenly_spaced,
    marker_shares,
)

STEPS, N = 12, 30


def random_walk(steps=STEPS, n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, generator=g)
    moves = 0.1 * torch.randn(steps, n, 2, generator=g)
    return torch.cat([x0[None], x0[None] + moves.cumsum(0)])  # (T+1, n, 2)


@pytest.fixture
def explorer():
    return TrajectoryExplorer(random_walk(), torch.linspace(1, 0, STEPS + 1), n_lines=10)


def sent_messages(fig):
    """Record every Python -> browser message of a FigureWidget."""
    seen = []
    names = ["_py2js_update", "_py2js_restyle", "_py2js_relayout"]
    names += ["_py2js_addTraces", "_py2js_deleteTraces", "_py2js_animate"]
    fig.observe(lambda change: change["new"] and seen.append(change["name"]), names=names)
    return seen


def test_controls_span_the_steps_and_play_is_linked_to_the_slider(explorer):
    assert explorer.slider.min == 0 and explorer.slider.max == STEPS
    assert explorer.play.max == STEPS
    link = explorer.play_link
    assert isinstance(link, Link)  # jslink: playing runs in the browser
    assert link.source == (explorer.play, "value") and link.target == (explorer.slider, "value")
    assert explorer.figure in explorer.children
    assert explorer.time_label.value == "t = 1.000"


def test_step_to_updates_the_same_figure_in_place_with_one_message(explorer):
    x = random_walk().numpy()
    fig = explorer.figure
    traces = fig.data
    seen = sent_messages(fig)
    explorer.step_to(7)
    assert explorer.figure is fig and explorer.children[0] is fig
    assert all(a is b for a, b in zip(fig.data, traces, strict=True)) and len(fig.data) == len(
        traces
    )
    assert seen == ["_py2js_update"]  # one batched update, no new traces
    current = fig.data[-1]
    np.testing.assert_allclose(current.x, x[7, :, 0], rtol=1e-6)
    np.testing.assert_allclose(current.y, x[7, :, 1], rtol=1e-6)
    assert explorer.slider.value == 7 and explorer.step == 7
    assert explorer.time_label.value == f"t = {1 - 7 / STEPS:.3f}"


def test_traced_paths_hold_steps_zero_to_i_of_the_chosen_particles(explorer):
    x = random_walk().numpy()
    explorer.step_to(4)
    traced = explorer.figure.data[-2]
    m = 10
    assert len(traced.x) == m * (4 + 2)
    chunks = np.stack([traced.x, traced.y], axis=1).reshape(m, 6, 2)
    assert np.isnan(chunks[:, -1]).all()
    full = np.stack([explorer.figure.data[-3].x, explorer.figure.data[-3].y], axis=1)
    full = full.reshape(m, STEPS + 2, 2)
    np.testing.assert_array_equal(chunks[:, :5], full[:, :5])
    for path in chunks[:, :5]:  # every drawn path is one particle's first 5 positions
        j = np.argmin(np.abs(x[0, :, 0] - path[0, 0]) + np.abs(x[0, :, 1] - path[0, 1]))
        np.testing.assert_allclose(path, x[:5, j], rtol=1e-6)


def test_readout_shows_displacement_and_path_length(explorer):
    x = random_walk().double().numpy()
    i = 9
    explorer.step_to(i)
    displacement = np.mean([math.dist(x[i, j], x[0, j]) for j in range(N)])
    length = np.mean(
        [sum(math.dist(x[k, j], x[k - 1, j]) for k in range(1, i + 1)) for j in range(N)]
    )
    assert f"= {displacement:.3f}" in explorer.readout.value
    assert f"path length = {length:.3f}" in explorer.readout.value


def test_slider_and_buttons_drive_the_step(explorer):
    x = random_walk().numpy()
    explorer.slider.value = 5  # what the browser does when the slider moves
    assert explorer.step == 5
    np.testing.assert_allclose(explorer.figure.data[-1].x, x[5, :, 0], rtol=1e-6)
    explorer.next_button.click()
    assert explorer.step == 6 and explorer.slider.value == 6
    explorer.prev_button.click()
    explorer.prev_button.click()
    assert explorer.step == 4
    explorer.step_to(STEPS)
    explorer.next_button.click()  # stays at the end, no error
    assert explorer.step == STEPS and explorer.message.value == ""
    explorer.step_to(0)
    explorer.prev_button.click()
    assert explorer.step == 0


def test_step_to_out_of_range_is_a_clear_value_error(explorer):
    with pytest.raises(ValueError, match=rf"step must be an integer in \[0, {STEPS}\]"):
        explorer.step_to(STEPS + 1)
    with pytest.raises(ValueError, match="step"):
        explorer.step_to(1.5)


@pytest.mark.parametrize(
    "make_bad, words",
    [
        (lambda x, t: (x.clone().index_put_((torch.tensor(3),), torch.tensor(math.nan)), t), "NaN"),
        (lambda x, t: (x[..., :1], t), "shape (T+1, n, 2)"),
        (lambda x, t: (x, t[:-2]), "times must have shape"),
        (lambda x, t: (x.transpose(0, 1), t), "times must have shape"),
        (lambda x, t: (x[:1], t[:1]), "at least 2 time points"),
    ],
)
def test_bad_input_shows_a_message_and_keeps_the_last_good_picture(explorer, make_bad, words):
    good_x, good_t = random_walk(), torch.linspace(1, 0, STEPS + 1)
    explorer.step_to(3)
    before = [(t.x.copy(), t.y.copy()) for t in explorer.figure.data]
    fig = explorer.figure
    assert explorer.set_trajectories(*make_bad(good_x, good_t)) is False  # no exception
    assert words in explorer.message.value and "previous trajectories" in explorer.message.value
    assert explorer.figure is fig and explorer.step == 3 and explorer.slider.max == STEPS
    for (x, y), trace in zip(before, explorer.figure.data, strict=True):
        np.testing.assert_array_equal(trace.x, x)
        np.testing.assert_array_equal(trace.y, y)
    explorer.next_button.click()  # the old data still step, the message stays
    assert explorer.step == 4 and words in explorer.message.value


def test_set_trajectories_swaps_data_in_the_same_figure(explorer):
    fig = explorer.figure
    explorer.step_to(10)
    shorter = random_walk(steps=6, n=50, seed=1)
    assert explorer.set_trajectories(shorter, torch.linspace(0, 1, 7)) is True
    assert explorer.figure is fig
    assert explorer.slider.max == explorer.play.max == 6
    assert explorer.step == 6 and explorer.slider.value == 6  # clamped to the new end
    np.testing.assert_allclose(fig.data[-1].x, shorter[6, :, 0].numpy(), rtol=1e-6)
    assert len(fig.data[-3].x) == 10 * (6 + 2)

    longer = 10 + random_walk(steps=20, n=40, seed=2)
    assert explorer.set_trajectories(longer, torch.linspace(0, 1, 21)) is True
    assert explorer.slider.max == 20 and explorer.step == 6
    np.testing.assert_allclose(fig.data[-1].x, longer[6, :, 0].numpy(), rtol=1e-6)
    lo, hi = fig.layout.xaxis.range
    assert lo <= longer[..., 0].min() and hi >= longer[..., 0].max()  # view follows data

    explorer.set_trajectories(longer[:, :, :1], torch.linspace(0, 1, 21))
    assert explorer.message.value != ""
    explorer.set_trajectories(longer, torch.linspace(0, 1, 21))
    assert explorer.message.value == ""  # a good update clears the old message


def test_background_traces_are_drawn_beneath():
    density = density_heatmap_figure(lambda x: -(x**2).sum(-1) / 2, (-3, 3), (-3, 3), n=8)
    e = TrajectoryExplorer(random_walk(), torch.linspace(1, 0, STEPS + 1), background=density)
    assert e.figure.data[0].type == "heatmap" and len(e.figure.data) == 4
    reference = np.random.default_rng(0).normal(size=(15, 2))
    e = TrajectoryExplorer(random_walk(), np.linspace(1, 0, STEPS + 1), background=reference)
    np.testing.assert_allclose(e.figure.data[0].x, reference[:, 0])


def test_constructor_rejects_bad_input_with_value_errors():
    with pytest.raises(ValueError, match="times must have shape"):
        TrajectoryExplorer(random_walk(), torch.linspace(1, 0, 3))
    with pytest.raises(ValueError, match="n_lines"):
        TrajectoryExplorer(random_walk(), torch.linspace(1, 0, STEPS + 1), n_lines=-1)
    with pytest.raises(ValueError, match="background"):
        TrajectoryExplorer(random_walk(), torch.linspace(1, 0, STEPS + 1), background="x")
    for bad in (0, -5, 2.5, True, "400"):
        with pytest.raises(ValueError, match="max_markers .* must be an integer >= 1"):
            TrajectoryExplorer(random_walk(), torch.linspace(1, 0, STEPS + 1), max_markers=bad)
    with pytest.raises(ValueError, match="max_line_points"):
        TrajectoryExplorer(random_walk(), torch.linspace(1, 0, STEPS + 1), max_line_points=0)


def drawn_points(fig) -> tuple[int, int]:
    """(markers, line points) the browser redraws when the figure changes."""
    markers = sum(len(t.x) for t in fig.data if t.type == "scatter" and "markers" in t.mode)
    lines = sum(len(t.x) for t in fig.data if t.type == "scatter" and t.mode == "lines")
    return markers, lines


def test_a_move_draws_at_most_the_caps_and_the_readout_uses_every_particle():
    """Chapter 00's size (1,024 particles, 80 steps): a move draws an evenly spaced subset
    of 400 particles and fewer paths (all their time points); the numbers use all 1,024."""
    steps, n = 80, 1024
    x = random_walk(steps=steps, n=n, seed=3)
    e = TrajectoryExplorer(x, torch.linspace(1, 0, steps + 1))
    assert (MAX_DRAWN_MARKERS, MAX_DRAWN_LINE_POINTS) == (400, 4_000)
    for i in (steps // 2, steps):
        e.slider.value = i  # a reader's move
        markers, lines = drawn_points(e.figure)
        assert markers == 400 and lines <= MAX_DRAWN_LINE_POINTS
    full = np.stack([e.figure.data[-3].x, e.figure.data[-3].y], axis=1).reshape(-1, steps + 2, 2)
    assert len(full) == 4_000 // (2 * (steps + 2)) == 24  # whole paths, not fewer points
    keep = evenly_spaced(n, 400)
    np.testing.assert_allclose(e.figure.data[-1].x, x[steps, keep, 0].numpy(), rtol=1e-6)
    again = TrajectoryExplorer(x, torch.linspace(1, 0, steps + 1))  # same data, same subset
    again.step_to(steps)
    np.testing.assert_array_equal(again.figure.data[-1].x, e.figure.data[-1].x)
    d = x.double().numpy()
    displacement = np.linalg.norm(d[steps] - d[0], axis=-1).mean()  # all 1,024
    assert f"= {displacement:.3f}" in e.readout.value and "n = 1024" in e.readout.value
    assert "drawing 400 of 1,024 particles and 24 of 1,024 paths" in e.readout.value
    small = TrajectoryExplorer(x[:, :300], torch.linspace(1, 0, steps + 1), n_lines=0)
    assert "drawing" not in small.readout.value  # all drawn: no note
    assert drawn_points(small.figure)[0] == 300


def test_background_points_share_the_marker_cap():
    reference = np.random.default_rng(0).normal(size=(600, 2))
    x = random_walk(n=1024)
    e = TrajectoryExplorer(x, np.linspace(1, 0, STEPS + 1), background=reference)
    assert marker_shares([600, 1024], 400) == [147, 252]  # in proportion, rounded down
    np.testing.assert_allclose(e.figure.data[0].x, reference[evenly_spaced(600, 147), 0])
    assert drawn_points(e.figure)[0] == 400  # the particles take the rest
    assert "drawing 253 of 1,024 particles" in e.readout.value
    assert e.set_trajectories(random_walk(n=2000, seed=4), np.linspace(1, 0, STEPS + 1))
    e.step_to(3)
    assert drawn_points(e.figure)[0] == 400 and "253 of 2,000 particles" in e.readout.value


def test_shown_errors_shows_escaped_messages_and_lets_interrupts_through():
    label = message_label()
    with shown_errors(label) as outcome:
        raise ValueError("sigma must be > 0, got <b>-1</b>")
    assert not outcome.ok and "sigma must be &gt; 0" in label.value and "<b>" not in label.value
    with shown_errors(label) as outcome:
        raise ZeroDivisionError("division by zero")
    assert "ZeroDivisionError: division by zero" in label.value
    with shown_errors(label) as outcome:
        pass
    assert outcome.ok and label.value == ""
    show_message(label, "hello", kind="info")
    with pytest.raises(KeyboardInterrupt), shown_errors(label):
        raise KeyboardInterrupt
    with pytest.raises(ValueError, match="kind"):
        show_message(label, "x", kind="loud")


def test_a_frontend_that_connects_later_sees_the_paths():
    # Voila (and a preheated kernel) shows the figure from its state at construction:
    # the full paths must be in it, not only sent as an update before the page connected.
    x = np.cumsum(np.random.default_rng(0).normal(size=(6, 5, 2)), axis=0)
    explorer = TrajectoryExplorer(x, np.linspace(1, 0, 6))
    traces = {t["name"]: t for t in explorer.figure.get_state()["_widget_data"]}

    def decode(v):
        if isinstance(v, dict):
            return np.frombuffer(v["buffer"], dtype=v["dtype"]).reshape(v["shape"])
        return np.asarray(v, dtype=float)

    paths_x = decode(traces["paths"]["x"])
    assert np.isfinite(paths_x).sum() == 6 * 5
    np.testing.assert_allclose(decode(traces["x_t"]["x"]), x[0, :, 0], rtol=1e-6)
