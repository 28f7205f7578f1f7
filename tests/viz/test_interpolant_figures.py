"""Tests for viz.interpolant_figures: every builder on small synthetic inputs (traces,
thresholds, axis types), and the Monte-Carlo HTML table's rows and marks."""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from pflow_explore.datasets.toy2d import random_mixture, single_gaussian
from pflow_explore.interpolant_learning import FieldErrors, Sweep
from pflow_explore.interpolants import get_interpolant
from pflow_explore.theory.interpolant_checks import (
    LikelihoodControl,
    ResidualConvergence,
    fields_vs_monte_carlo,
)
from pflow_explore.theory.interpolant_fields import InterpolantFields
from pflow_explore.viz import interpolant_figures as V

F64 = torch.float64


def gaussian_fields() -> InterpolantFields:
    gen = torch.Generator().manual_seed(0)
    rho1 = random_mixture(1, 2, generator=gen, mean_scale=1.0, std_range=(0.3, 1.2))
    rho0 = single_gaussian(torch.zeros(2, dtype=F64))
    return InterpolantFields(rho0, rho1, get_interpolant("linear", "sqrt"))


def sweep() -> Sweep:
    e = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    samples = torch.randn(3, 20, 2, generator=torch.Generator().manual_seed(1))
    return Sweep("mixtures", e, e + 1, e + 2, 0.5, 1.0, 9.0, samples, samples[0])


def test_monte_carlo_html_lists_every_entry_and_marks_large_z():
    check_ = fields_vs_monte_carlo(
        gaussian_fields(), (0.5,), 2, 5000, torch.Generator().manual_seed(14)
    )
    page = V.monte_carlo_html(check_, 4.0)
    assert page.count("<tr>") == len(check_.z) + 1
    check_.z[0] = 9.0
    assert "font-weight:bold" in V.monte_carlo_html(check_, 4.0)


def test_sweep_figures_show_each_eps_relative_to_the_floor():
    sw = sweep()
    fig = V.samples_figure(sw, "title")
    assert len(fig.data) == 4 and fig.layout.title.text == "title"
    fig = V.eps_sweep_figure({"mixtures": sw}, {"mixtures": "eight -> mix"}, 3.0)
    assert len(fig.data) == 2 and fig.data[0].name == "eight -> mix"
    assert list(fig.data[0].y) == [2.0, 3.0, 4.0]  # energy / floor_energy
    assert list(fig.data[1].y) == [2.0, 2.5, 3.0]  # sliced W2 / floor
    assert list(fig.data[0].x) == ["ODE", "0.5", "1.0"]


def test_curve_figures_carry_the_series_and_log_axes():
    t = torch.tensor([0.2, 0.5], dtype=F64)
    fe = V.field_error_figure([FieldErrors("p", t, t, 2 * t, 0.1, 0.2)], 0.2)
    assert [d.name for d in fe.data] == ["b, p", "eta, p"] and fe.layout.yaxis.type == "log"
    k = torch.tensor([0.5, 1.0], dtype=F64)
    lc = LikelihoodControl(2, 1.0, k, k / 2, k, 3.0, 1.0, 1.0, k, 2 * k, k / 4, k / 2)
    fig = V.likelihood_figure(lc)
    assert fig.layout.xaxis.type == "log" and list(fig.data[1].y) == [0.25, 0.5]
    assert [d.name for d in V.strength_figure(lc).data] == ["ODE", "SDE eps = 1", "its bound"]
    h = torch.tensor([0.1, 0.05], dtype=F64)
    res = ResidualConvergence(0.4, h, h, torch.tensor([0.0, 0.5], dtype=F64), torch.ones(2, 2))
    fig = V.residual_figure(res)
    assert len(fig.data) == 3 and list(fig.data[2].y) == [1.0, 0.25]  # the slope-2 guide
    fig = V.losses_figure({"mixtures": [1.0] * 60}, {"mixtures": "m"})
    assert len(fig.data[0].y) == 11 and set(fig.data[0].y) == {1.0}


def test_monte_carlo_table_has_one_row_per_entry():
    mc = fields_vs_monte_carlo(gaussian_fields(), (0.5,), 1, 2000, torch.Generator().manual_seed(2))
    fig = V.monte_carlo_table(mc)
    assert isinstance(fig.data[0], go.Table) and len(fig.data[0].cells.values[0]) == len(mc.z)
