"""Figure builders: the drawn coordinates are checked against the inputs computed another way."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from scipy.stats import multivariate_normal

from pflow_explore import viz


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --- points and trajectories ------------------------------------------------------------


def test_points_figure_draws_the_samples_over_one_trace_of_paths(rng):
    n, steps, m = 7, 5, 3
    points = torch.as_tensor(rng.normal(size=(n, 2)), dtype=torch.float32)
    traj = torch.as_tensor(rng.normal(size=(steps + 1, m, 2)))
    fig = viz.points_figure(points, traj, title="x")
    assert isinstance(fig, go.Figure)
    assert [t.mode for t in fig.data] == ["lines", "markers"]  # paths beneath samples
    np.testing.assert_array_equal(fig.data[1].x, points[:, 0].numpy().astype(np.float64))
    np.testing.assert_array_equal(fig.data[1].y, points[:, 1].numpy().astype(np.float64))

    lines = fig.data[0]
    assert len(lines.x) == len(lines.y) == (steps + 2) * m
    for j in range(m):  # path j, then one break
        start = j * (steps + 2)
        np.testing.assert_array_equal(lines.x[start : start + steps + 1], traj[:, j, 0].numpy())
        np.testing.assert_array_equal(lines.y[start : start + steps + 1], traj[:, j, 1].numpy())
        assert math.isnan(lines.x[start + steps + 1]) and math.isnan(lines.y[start + steps + 1])
    assert np.isfinite(lines.x).sum() == (steps + 1) * m


def test_points_figure_has_equal_aspect_and_limits_that_contain_everything(rng):
    points = rng.normal(size=(20, 2)) * [1.0, 3.0]
    traj = rng.normal(size=(4, 5, 2)) * 5
    fig = viz.points_figure(points, traj)
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    everything = np.concatenate([points, traj.reshape(-1, 2)])
    lo_x, hi_x = fig.layout.xaxis.range
    lo_y, hi_y = fig.layout.yaxis.range
    assert lo_x < everything[:, 0].min() and hi_x > everything[:, 0].max()
    assert lo_y < everything[:, 1].min() and hi_y > everything[:, 1].max()
    fixed = viz.points_figure(points, xlim=(-1, 2), ylim=(0, 1))
    assert tuple(fixed.layout.xaxis.range) == (-1, 2) and tuple(fixed.layout.yaxis.range) == (0, 1)


def test_points_figure_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"points must have shape \(n, 2\)"):
        viz.points_figure(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"trajectories must have shape \(T\+1, m, 2\)"):
        viz.points_figure(np.zeros((5, 2)), trajectories=np.zeros((5, 2)))


def test_tensors_with_grad_are_accepted():
    x = torch.randn(4, 2, requires_grad=True)
    fig = viz.points_figure(x * 2)
    np.testing.assert_allclose(fig.data[0].x, 2 * x[:, 0].detach().numpy())


# --- vector fields ----------------------------------------------------------------------


def _arrows(trace):
    xy = np.stack([trace.x, trace.y], axis=1)
    assert xy.shape[0] % 7 == 0
    return xy.reshape(-1, 7, 2)  # tail, tip, gap, barb, tip, barb, gap


def test_vector_field_arrows_go_from_grid_points_along_the_field(rng):
    a = rng.normal(size=(2, 2))
    b = rng.normal(size=2)
    n, scale = 6, 0.37
    fig = viz.vector_field_figure(
        lambda x: x @ torch.as_tensor(a.T, dtype=x.dtype) + torch.as_tensor(b, dtype=x.dtype),
        (-2, 3),
        (-1, 1),
        n=n,
        scale=scale,
    )
    arrows = _arrows(fig.data[0])
    assert arrows.shape[0] == n * n
    xs, ys = np.linspace(-2, 3, n), np.linspace(-1, 1, n)
    expected_tails = np.array([(x, y) for y in ys for x in xs])  # row j = y_j
    np.testing.assert_allclose(arrows[:, 0], expected_tails, atol=1e-6)
    np.testing.assert_allclose(
        arrows[:, 1] - arrows[:, 0], scale * (expected_tails @ a.T + b), atol=1e-5
    )
    assert np.isnan(arrows[:, [2, 6]]).all()
    np.testing.assert_array_equal(arrows[:, 1], arrows[:, 4])

    # Barbs: head 0.3 of the shaft long, 20 degrees either side of it, pointing back.
    shaft = arrows[:, 1] - arrows[:, 0]
    for barb in (arrows[:, 3], arrows[:, 5]):
        back = arrows[:, 1] - barb
        np.testing.assert_allclose(
            np.linalg.norm(back, axis=1), 0.3 * np.linalg.norm(shaft, axis=1), rtol=1e-5
        )
        cos = (back * shaft).sum(1) / (np.linalg.norm(back, axis=1) * np.linalg.norm(shaft, axis=1))
        np.testing.assert_allclose(np.degrees(np.arccos(np.clip(cos, -1, 1))), 20.0, atol=1e-3)

    def cross(u, v):
        return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]

    cross_left = cross(arrows[:, 1] - arrows[:, 3], shaft)
    cross_right = cross(arrows[:, 1] - arrows[:, 5], shaft)
    assert (np.sign(cross_left) == -np.sign(cross_right)).all()  # one barb on each side


def test_vector_field_autoscale_makes_the_longest_arrow_nine_tenths_of_the_spacing(rng):
    n = 5
    fig = viz.vector_field_figure(lambda x: x**3, (-1, 1), (-2, 2), n=n)
    arrows = _arrows(fig.data[0])
    longest = np.linalg.norm(arrows[:, 1] - arrows[:, 0], axis=1).max()
    spacing = min(2 / (n - 1), 4 / (n - 1))
    np.testing.assert_allclose(longest, 0.9 * spacing, rtol=1e-6)
    assert tuple(fig.layout.xaxis.range) == (-1, 1)


def test_vector_field_passes_t_to_the_field():
    calls = []

    def field(x, t):
        calls.append(t)
        return t * torch.ones_like(x)

    fig = viz.vector_field_figure(field, (0, 1), (0, 1), n=3, t=0.25, scale=2.0)
    arrows = _arrows(fig.data[0])
    np.testing.assert_allclose(arrows[:, 1] - arrows[:, 0], 0.5)
    assert calls == [0.25]


def test_vector_field_rejects_bad_grids_and_outputs():
    with pytest.raises(ValueError, match="n .* >= 2"):
        viz.vector_field_figure(lambda x: x, (0, 1), (0, 1), n=1)
    with pytest.raises(ValueError, match="xlim"):
        viz.vector_field_figure(lambda x: x, (1, 0), (0, 1))
    with pytest.raises(ValueError, match=r"field\(x\)"):
        viz.vector_field_figure(lambda x: x[:, 0], (0, 1), (0, 1), n=3)


# --- densities --------------------------------------------------------------------------


def test_density_heatmap_matches_scipy_and_is_indexed_row_y_column_x(rng):
    mean = rng.normal(size=2)
    l = rng.normal(size=(2, 2))
    cov = l @ l.T + 0.3 * np.eye(2)
    ref = multivariate_normal(mean, cov)
    prec, logdet = np.linalg.inv(cov), np.linalg.slogdet(cov)[1]

    def log_prob(x):
        d = x.double() - torch.as_tensor(mean)
        q = torch.einsum("ni,ij,nj->n", d, torch.as_tensor(prec), d)
        return -0.5 * q - 0.5 * logdet - math.log(2 * math.pi)

    xlim, ylim, n = (-3.0, 2.0), (-1.0, 4.0), 13
    fig = viz.density_heatmap_figure(log_prob, xlim, ylim, n=n)
    heat = fig.data[0]
    assert isinstance(heat, go.Heatmap) and heat.z.shape == (n, n)
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    np.testing.assert_allclose(heat.x, xs)
    np.testing.assert_allclose(heat.y, ys)
    expected = np.array([[ref.pdf([x, y]) for x in xs] for y in ys])
    np.testing.assert_allclose(heat.z, expected, rtol=1e-5, atol=1e-9)

    logs = viz.density_heatmap_figure(log_prob, xlim, ylim, n=n, log_scale=True).data[0].z
    np.testing.assert_allclose(logs, np.log(expected), rtol=1e-5)


def test_density_heatmap_accepts_values_on_a_grid(rng):
    values = rng.normal(size=(4, 6))
    fig = viz.density_heatmap_figure(torch.as_tensor(values), (0, 1), (0, 2))
    np.testing.assert_allclose(fig.data[0].z, np.exp(values))
    assert len(fig.data[0].x) == 6 and len(fig.data[0].y) == 4
    with pytest.raises(ValueError, match="log_prob"):
        viz.density_heatmap_figure(lambda x: x, (0, 1), (0, 1), n=5)


# --- image grids ------------------------------------------------------------------------


def _pixels(x):
    return np.clip(np.floor((np.asarray(x, dtype=np.float64) + 1) * 255 / 2 + 0.5), 0, 255)


def test_image_grid_tiles_gray_images_row_major(rng):
    n, h, w, nrow, pad = 5, 4, 3, 2, 1
    images = rng.uniform(-1.2, 1.2, size=(n, 1, h, w))  # a little outside: clipped
    grid = viz.image_grid(torch.as_tensor(images), nrow=nrow, padding=pad)
    rows = math.ceil(n / nrow)
    assert grid.dtype == np.uint8
    assert grid.shape == (rows * (h + pad) + pad, nrow * (w + pad) + pad, 3)
    covered = np.zeros(grid.shape[:2], dtype=bool)
    for k in range(n):
        r, c = divmod(k, nrow)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        tile = grid[top : top + h, left : left + w]
        for ch in range(3):
            np.testing.assert_array_equal(tile[..., ch], _pixels(images[k, 0]))
        covered[top : top + h, left : left + w] = True
    assert (grid[~covered] == 255).all()  # padding and the empty sixth tile are white


def test_image_grid_keeps_rgb_channels(rng):
    images = rng.uniform(-1, 1, size=(3, 3, 2, 2))
    grid = viz.image_grid(images, nrow=3, padding=0)
    assert grid.shape == (2, 6, 3)
    for k in range(3):
        np.testing.assert_array_equal(
            grid[:, 2 * k : 2 * k + 2], _pixels(images[k].transpose(1, 2, 0))
        )


def test_image_grid_figure_is_one_image_without_axes_and_with_titles(rng):
    images = torch.as_tensor(rng.uniform(-1, 1, size=(6, 1, 8, 8)))
    fig = viz.image_grid_figure(images, nrow=4)
    assert len(fig.data) == 1 and isinstance(fig.data[0], go.Image)
    assert fig.data[0].z.shape == (2 * 10 + 2, 4 * 10 + 2, 3)
    assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False

    titled = viz.image_grid_figure(images, nrow=4, titles=[f"#{k}" for k in range(6)])
    assert [a.text for a in titled.layout.annotations] == [f"#{k}" for k in range(6)]
    assert titled.data[0].z.shape[0] > fig.data[0].z.shape[0]  # room for the titles
    assert titled.data[0].z.shape[1] == fig.data[0].z.shape[1]


def test_image_grid_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        viz.image_grid_figure(np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        viz.image_grid_figure(np.full((1, 1, 2, 2), np.nan))
    with pytest.raises(ValueError, match="titles"):
        viz.image_grid_figure(np.zeros((2, 1, 4, 4)), titles=["a"])
    with pytest.raises(ValueError, match="nrow"):
        viz.image_grid_figure(np.zeros((2, 1, 4, 4)), nrow=0)


# ---- panels ----------------------------------------------------------------------------
def test_panel_grid_places_each_panel_and_checks_its_input():
    import plotly.graph_objects as go
    import pytest

    from pflow_explore.viz import panel_grid

    panels = [[[go.Scatter(x=[r, c], y=[0, 1])] for c in range(3)] for r in range(2)]
    fig = panel_grid(panels, [f"p{i}" for i in range(6)], height=300)
    assert len(fig.data) == 6
    # row-major placement: panel (1, 2) is the sixth axis pair, and it keeps its data
    assert fig.data[5].xaxis == "x6" and list(fig.data[5].x) == [1, 2]
    assert fig.layout.yaxis6.scaleanchor == "x6"
    assert [a.text for a in fig.layout.annotations] == [f"p{i}" for i in range(6)]
    with pytest.raises(ValueError, match="6 titles"):
        panel_grid(panels, ["one"])
    with pytest.raises(ValueError, match="rows x cols"):
        panel_grid([[[]], [[], []]], ["a", "b", "c"])


def test_bars_figure_groups_series():
    from pflow_explore.viz import bars_figure

    fig = bars_figure({"a": {"x": 1.0, "y": 2.0}, "b": {"x": 3.0, "y": 4.0}}, {"b": "#123456"})
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[1].y) == [3.0, 4.0] and fig.data[1].marker.color == "#123456"
    assert fig.layout.barmode == "group"
    # a NaN height is a gap (None), never a NaN in the figure's JSON
    gap = bars_figure({"a": {"x": float("nan"), "y": 1.0}})
    assert list(gap.data[0].y) == [None, 1.0]


def test_plain_floats_rounds_on_request():
    import math

    import torch

    from pflow_explore.viz import plain_floats

    assert plain_floats(torch.tensor([1.23456, math.nan]), decimals=2) == [1.23, None]


def test_polyline_lists_are_plain_floats_with_a_none_after_each_line():
    from pflow_explore.viz.arrays import polyline_lists

    lines = np.array([[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [6.123456, 7.0]]], dtype=np.float32)
    x, y = polyline_lists(lines, decimals=2)
    assert x == [0.0, 2.0, None, 4.0, 6.12, None] and y == [1.0, 3.0, None, 5.0, 7.0, None]
    assert all(type(v) is float for v in x if v is not None)
    assert polyline_lists(np.zeros((0, 2, 2))) == ([], [])
    with pytest.raises(ValueError, match=r"\(m, L, 2\)"):
        polyline_lists(np.zeros((3, 2)))


def test_samples_figure_keeps_the_legend_and_equal_axes(rng):
    from pflow_explore.viz.points import points_trace, samples_figure

    traces = [points_trace(rng.normal(size=(5, 2)), name) for name in ("a", "b")]
    fig = samples_figure(traces, "two sets", 300)
    assert [t.name for t in fig.data] == ["a", "b"] and fig.layout.height == 300
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    assert fig.layout.title.text == "two sets" and fig.layout.showlegend is not False
