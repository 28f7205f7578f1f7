"""viz.thinning: a figure's markers cut to a budget, evenly and deterministically, and said."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from pflow_explore import viz
from pflow_explore.viz.points import points_trace, trajectories_trace
from pflow_explore.viz.thinning import (
    MAX_FIGURE_MARKERS,
    drawing_note,
    evenly_spaced,
    marker_shares,
    thin_markers,
)


def test_evenly_spaced_keeps_both_ends_and_is_deterministic():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(2, 5000))
        k = int(rng.integers(2, n + 1))
        keep = evenly_spaced(n, k)
        assert len(keep) == k and keep[0] == 0 and keep[-1] == n - 1
        assert np.all(np.diff(keep) > 0)  # sorted, no repeats
        gaps = np.diff(keep)
        assert gaps.max() - gaps.min() <= 1  # as even as whole indices allow
    np.testing.assert_array_equal(evenly_spaced(5, 9), np.arange(5))
    assert evenly_spaced(5, 0).size == 0


def test_marker_shares_cut_in_proportion_only_over_the_cap():
    assert marker_shares([100, 200], 300) == [100, 200]
    assert marker_shares([600, 1024], 400) == [147, 252]
    assert marker_shares([5000, 1, 0], 100) == [99, 1, 0]  # a non-empty set keeps one
    assert drawing_note((10, 10, "a"), (4, 9, "b")) == "drawing 4 of 9 b"
    assert drawing_note((10, 10, "a")) == ""


def test_thin_markers_cuts_every_per_point_property_with_x_and_y():
    rng = np.random.default_rng(0)
    n = 1000
    xy = rng.normal(size=(n, 2))
    colors = [f"#{i % 256:02x}0000" for i in range(n)]
    sizes = rng.uniform(1, 9, n)
    dots = go.Scatter(
        x=xy[:, 0], y=xy[:, 1], mode="markers", text=[str(i) for i in range(n)],
        customdata=np.arange(n), marker=dict(color=colors, size=sizes, line_width=0),
    )  # fmt: skip
    paths = trajectories_trace(rng.normal(size=(5, 300, 2)))
    note = thin_markers([paths, dots], 250)
    keep = evenly_spaced(n, 250)
    assert note == "drawing 250 of 1,000 points"
    np.testing.assert_array_equal(dots.x, xy[keep, 0])
    np.testing.assert_array_equal(dots.y, xy[keep, 1])
    assert list(dots.text) == [str(i) for i in keep]
    np.testing.assert_array_equal(dots.customdata, keep)
    assert list(dots.marker.color) == [colors[i] for i in keep]
    np.testing.assert_array_equal(dots.marker.size, sizes[keep])
    assert dots.marker.line.width == 0  # scalar styling untouched
    assert len(paths.x) == 300 * (
        5 + 1
    )  # the line trace stays whole: 300 paths, 5 points + a break


def test_thin_markers_leaves_a_figure_within_budget_alone_and_checks_the_budget():
    dots = [points_trace(np.zeros((100, 2))) for _ in range(3)]
    assert thin_markers(dots, 300) == ""
    assert [len(t.x) for t in dots] == [100, 100, 100]
    for bad in (0, -5, 2.5, True, "300"):
        with pytest.raises(ValueError, match="integer >= 1"):
            thin_markers(dots, bad)


def test_panel_grid_draws_at_most_its_budget_and_its_title_says_so():
    rng = np.random.default_rng(1)
    sets = [rng.normal(size=(2000, 2)) for _ in range(7)]
    panels = [[[points_trace(x)] for x in sets]]
    fig = viz.panel_grid(panels, [f"p{i}" for i in range(7)], title="Samples")
    drawn = sum(len(t.x) for t in fig.data)
    assert drawn <= MAX_FIGURE_MARKERS
    share = MAX_FIGURE_MARKERS // 7
    assert [len(t.x) for t in fig.data] == [share] * 7
    for t, x in zip(fig.data, sets, strict=True):
        np.testing.assert_array_equal(t.x, x[evenly_spaced(2000, share), 0])
    assert (
        fig.layout.title.text
        == f"Samples<br><sup>drawing {share} of 2,000 points of each set</sup>"
    )

    whole = viz.panel_grid(panels, [f"p{i}" for i in range(7)], max_markers=14_000, title="S")
    assert [len(t.x) for t in whole.data] == [2000] * 7 and whole.layout.title.text == "S"
    untitled = viz.panel_grid([[[points_trace(sets[0])]]], ["p"], max_markers=500)
    assert untitled.layout.title.text == "drawing 500 of 2,000 points"
