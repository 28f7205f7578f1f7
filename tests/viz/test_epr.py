"""Figures of currents and entropy production: arrows where the current is, on one scale
across currents; particles coloured by value with NaN as a gap; region heatmaps on the
cell centres; clear errors for misshapen input; the chapter-12 charts carry their data
(the card's exact curve, phases, levels) and no NaN."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from pflow_explore import mips
from pflow_explore.epr import PlaneCurrents
from pflow_explore.viz.epr import (
    current_field_figure,
    losses_figure,
    particles_figure,
    phase_epr_figures,
    phi_sweep_figure,
    plane_currents_figure,
    region_heatmap_figure,
    ring_epr_figure,
    trap_epr_figure,
)


def _arrows(trace: go.Scatter) -> np.ndarray:
    """(tail, tip) pairs of a quiver trace: 7 entries per arrow, tail first, tip second."""
    xy = np.stack([np.asarray(trace.x, float), np.asarray(trace.y, float)], -1).reshape(-1, 7, 2)
    return xy[:, :2]


def test_current_field_arrows_start_at_cell_centres_on_one_scale():
    cx, cy = torch.linspace(-1, 1, 4), torch.linspace(-2, 2, 3)
    J = torch.zeros(3, 4, 2)
    J[1, 2] = torch.tensor([3.0, 4.0])  # one arrow of length 5 at (cx[2], cy[1])
    fig = current_field_figure(cx, cy, torch.ones(3, 4), {"a": (J, "red"), "b": (2 * J, "blue")})
    heat, a, b = fig.data
    assert isinstance(heat, go.Heatmap) and list(heat.x) == pytest.approx(cx.tolist())
    ends_a, ends_b = _arrows(a), _arrows(b)
    assert ends_a.shape == (12, 2, 2)
    k = 1 * 4 + 2  # row-major: [row y, column x]
    np.testing.assert_allclose(ends_a[k, 0], [float(cx[2]), float(cy[1])])
    spacing = min(2 / 3, 2.0)
    assert np.linalg.norm(ends_a[k, 1] - ends_a[k, 0]) == pytest.approx(0.9 * spacing)
    # the second current on the first one's scale: twice as long
    assert np.linalg.norm(ends_b[k, 1] - ends_b[k, 0]) == pytest.approx(1.8 * spacing)
    fixed = current_field_figure(cx, cy, torch.ones(3, 4), {"a": (J, "red")}, scale=0.1)
    assert np.linalg.norm(_arrows(fixed.data[1])[k, 1] - _arrows(fixed.data[1])[k, 0]) == (
        pytest.approx(0.5)
    )
    with pytest.raises(ValueError, match="current 'a'"):
        current_field_figure(cx, cy, torch.ones(3, 4), {"a": (torch.zeros(4, 3, 3), "red")})


def test_particles_figure_colours_symbols_and_no_nan():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    values = torch.tensor([0.5, 1.0, 2.0])
    fig = particles_figure(x, values, ["circle", "square", "circle"], ["a", "b", "c"], cmax=1.5)
    dots = fig.data[0]
    assert list(dots.x) == [0.0, 2.0, 4.0] and list(dots.marker.symbol) == [
        "circle",
        "square",
        "circle",
    ]
    assert list(dots.marker.color) == [0.5, 1.0, 2.0]
    assert dots.marker.cmax == 1.5
    assert particles_figure(x, values).data[0].marker.cmax == 2.0
    with pytest.raises(ValueError, match="finite"):
        particles_figure(x, torch.tensor([0.5, math.nan, 2.0]))
    assert fig.layout.yaxis.scaleanchor == "x"
    with pytest.raises(ValueError, match="values"):
        particles_figure(x, torch.ones(4))


def test_region_heatmap_on_cell_centres():
    edges = torch.linspace(-3, 3, 4)
    density = torch.arange(9.0).reshape(3, 3)
    heat = region_heatmap_figure(edges, density, "t").data[0]
    assert list(heat.x) == pytest.approx([-2.0, 0.0, 2.0]) and list(heat.y) == list(heat.x)
    assert heat.z[1][2] == 5.0  # [row y, column x]
    with pytest.raises(ValueError, match="density"):
        region_heatmap_figure(edges, torch.ones(2, 3))


def test_trap_epr_figure_draws_the_card_formula_and_the_points():
    v0s = torch.tensor([0.5, 1.0, 2.0])
    fig = trap_epr_figure(v0s, v0s * 2, v0s, v0s / 2, A=1.5, gamma=0.5, eps=2.0)
    exact = fig.data[0]
    x = np.asarray(exact.x)
    np.testing.assert_allclose(exact.y, 2 * 0.5 * x**2 / (2.0 * (1.5 + 0.5)), rtol=1e-12)
    assert x[-1] == pytest.approx(2.0 * 1.05) and len(fig.data) == 4
    assert list(fig.data[1].y) == [1.0, 2.0, 4.0] and list(fig.data[3].x) == [0.5, 1.0, 2.0]


def test_ring_epr_figure_one_level_per_size():
    fig = ring_epr_figure([4, 8], [torch.ones(4), torch.full((8,), 2.0)], torch.tensor([1.1, 2.2]))
    assert len(fig.data) == 4
    assert list(fig.data[0].x) == [0.0, 0.25, 0.5, 0.75]
    assert list(fig.data[3].y) == pytest.approx([2.2, 2.2])


def _phase_epr(phase_epr):
    x = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]]])
    local = torch.tensor([[0.1, 0.2, 0.3]])
    edges, density = torch.linspace(-2, 2, 3), torch.ones(2, 2)
    return mips.PhaseEPR(
        x, x, local, local, torch.tensor([[0, 1, 2]]), phase_epr, phase_epr,
        torch.tensor([1 / 3] * 3), 1.5, 0.1, 1.4, 0.2, edges, density, 10.0,
    )  # fmt: skip


def test_phase_epr_figures_symbols_bars_and_nan_as_gap():
    figs = phase_epr_figures(_phase_epr(torch.tensor([1.0, math.nan, 3.0])))
    assert set(figs) == {"snapshot", "regions", "phases"}
    assert list(figs["snapshot"].data[0].marker.symbol) == ["circle-open", "circle", "square"]
    assert list(figs["phases"].data[0].y) == [1.0, None, 3.0]
    assert list(figs["regions"].data[0].x) == pytest.approx([-1.0, 1.0])


def test_phi_sweep_figure_and_losses_and_plane_currents():
    w = mips.PhiSweep(
        torch.tensor([0.3, 0.5]), torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.1]),
        torch.tensor([0.2, 0.6]), 0.5,
    )  # fmt: skip
    fig = phi_sweep_figure(w)
    assert list(fig.data[1].y) == pytest.approx([0.2, 0.6]) and fig.data[1].yaxis == "y2"
    loss = losses_figure({"a": [3.0, 2.0], "b": [1.0]}, "t")
    assert [t.name for t in loss.data] == ["a", "b"] and list(loss.data[0].x) == [0, 1]
    cx = cy = torch.tensor([0.0, 1.0])
    J = torch.zeros(2, 2, 2)
    J[0, 0] = torch.tensor([1.0, 0.0])
    c = PlaneCurrents(cx, cy, torch.ones(2, 2), J, 2 * J)
    names = [t.name for t in plane_currents_figure(c, "t", "x", "g").data[1:]]
    assert names == ["exact", "learned"]
