"""widgets/jump_explorer.py: the jump panel follows t and s, the sampling panel follows NFE
and gamma, bad input keeps the picture and says why, and results are cached."""

from __future__ import annotations

import pytest
import torch

from pflow_explore import consistency as ct
from pflow_explore.chapters.ctm import exact_flow
from pflow_explore.metrics import energy_distance
from pflow_explore.widgets.jump_explorer import JumpExplorer
from pflow_explore.widgets.redraw_budget import (
    MAX_DRAWN_LINE_POINTS,
    MAX_DRAWN_MARKERS,
    evenly_spaced,
)


@pytest.fixture(scope="module")
def explorer():
    flow = exact_flow()
    g = lambda x, t, s: flow.denoiser(x, t)  # the Euler jump: a stand-in for a learned one
    z = torch.randn(60, 2, generator=torch.Generator().manual_seed(0))
    x0 = flow.mixture.sample(60, torch.Generator().manual_seed(1)).float()
    return JumpExplorer(
        learned=lambda x, t, s: ct.jump(g, x.float(), t, s),
        exact=lambda x, t, s: ct.exact_jump(flow.denoiser, x, t, s, rtol=1e-4, atol=1e-4),
        cloud=lambda t: x0 + t * z,
        x_T=80.0 * torch.randn(60, 2, generator=torch.Generator().manual_seed(2)),
        target=x0,
        max_nfe=4,
    )


def test_the_first_picture_is_in_the_state_the_browser_first_renders(explorer):
    """Both panels are drawn before their figures go live: their widget state (what the
    browser renders first, before any slider moves) holds every trace and the titles."""
    fresh = JumpExplorer(
        explorer.learned, explorer.exact, explorer.cloud, explorer.x_T, explorer.target, max_nfe=4
    )
    jump, sampling = fresh.figure, fresh.sampling_figure
    assert [len(jump._widget_data[i]["x"]) for i in (0, 2, 3)] == [60] * 3
    assert [len(sampling._widget_data[i]["x"]) for i in (0, 2, 3)] == [60] * 3
    titles = [f._widget_layout["title"]["text"] for f in (jump, sampling)]
    assert titles == ["jump from t = 2 to s = 0.5", "gamma-sampling, 1 NFE, gamma = 0"]


def test_a_jump_move_leaves_the_sampling_panel_alone(explorer):
    """The panels are two figures: a move of t or s sends nothing to the sampling figure
    (plotly.js redraws a whole figure on any change)."""
    sent = []
    explorer.sampling_figure.observe(lambda change: sent.append(change["name"]))
    explorer.set_jump(10.0, 0.5)
    explorer.set_jump(2.0, 0.25)
    assert sent == []
    explorer.set_sampling(4, 0.3)  # what the sampling panel's own sliders send is seen
    assert sent  # (a setting no other test uses: the explorer and its caches are shared)


def test_jump_panel_follows_t_and_s(explorer):
    before = list(explorer.figure.data[3].x)
    assert explorer.set_jump(5.0, 0.5)
    assert list(explorer.figure.data[3].x) != before
    assert explorer.figure.layout.title.text == "jump from t = 5 to s = 2.5"
    assert explorer.t_slider.value == 5.0 and explorer.t_box.value == 5.0
    # s = t: no jump, learned and exact land where they start
    assert explorer.set_jump(2.0, 1.0)
    x = list(explorer.figure.data[0].x)
    assert list(explorer.figure.data[3].x) == pytest.approx(x)
    assert list(explorer.figure.data[2].x) == pytest.approx(x)


def test_the_euler_jump_misses_the_exact_one_and_the_readout_says_so(explorer):
    explorer.set_jump(20.0, 0.0)
    assert "mean |learned G - exact G|" in explorer.readout.value
    assert explorer._error > 0.1  # one Euler step from t = 20 to 0 is far from the ODE


def test_sampling_panel_and_cache(explorer):
    assert explorer.set_sampling(2, 1.0)
    assert "2 NFE, gamma = 1" in explorer.sampling_figure.layout.title.text
    assert (2, 1.0) in explorer._samples
    assert "energy distance to data" in explorer.readout.value
    explorer.nfe_slider.value = 3  # a reader's move
    assert explorer.nfe == 3


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda e: e.set_jump(-1.0, 0.5), "t must be"),
        (lambda e: e.set_jump(100.0, 0.5), "at most T"),
        (lambda e: e.set_jump(2.0, 1.5), "s / t"),
        (lambda e: e.set_sampling(0, 0.0), "NFE"),
        (lambda e: e.set_sampling(2, 2.0), "gamma"),
    ],
)
def test_bad_input_keeps_the_picture_and_says_why(explorer, call, match):
    explorer.set_jump(2.0, 0.25)
    before = list(explorer.figure.data[3].x)
    assert call(explorer) is False
    assert match in explorer.message.value
    assert list(explorer.figure.data[3].x) == before
    assert explorer.t_box.value == 2.0  # the box gives way to the value shown


def test_the_t_box_is_the_validated_input(explorer):
    assert "pflow-input" in explorer.t_box._dom_classes
    explorer.t_box.value = -1.0
    assert "t must be" in explorer.message.value and explorer.t == 2.0


def test_the_t_slider_only_draws_its_precomputed_jumps(explorer):
    """Construction computed every offered t at the first s / t (one exact solve each), equal
    to the direct solve at a random offered t; the t slider's moves then call no solver."""
    flow = exact_flow()
    calls = []

    def exact(x, t, s):
        calls.append((t, s))
        return ct.exact_jump(flow.denoiser, x, t, s, rtol=1e-4, atol=1e-4)

    fresh = JumpExplorer(
        explorer.learned, exact, explorer.cloud, explorer.x_T, explorer.target, max_nfe=4
    )
    options = fresh.t_slider.options
    assert sorted({t for t, _ in calls if t in options}) == sorted(options)
    t = options[int(torch.randint(len(options), (1,)))]
    x, g, g_star = fresh._jumps[(t, 0.25)]
    direct = ct.exact_jump(flow.denoiser, explorer.cloud(t).double(), t, 0.25 * t, 1e-4, 1e-4)
    assert torch.equal(x, explorer.cloud(t))
    assert torch.allclose(g_star, direct, rtol=0, atol=1e-12)
    assert torch.equal(g, explorer.learned(explorer.cloud(t), t, 0.25 * t))
    calls.clear()
    for t in options:  # the reader's moves
        fresh.t_slider.value = t
    assert calls == [] and fresh.t == options[-1]
    assert fresh.figure.layout.title.text == f"jump from t = {options[-1]:g} to s = 20"


def test_moving_back_to_a_sampling_setting_computes_nothing(explorer, monkeypatch):
    """Samples and their energy distances are cached: a move back only draws."""
    from pflow_explore.widgets import jump_explorer

    assert explorer.set_sampling(2, 0.5)
    first = explorer.readout.value
    explorer.set_sampling(1, 0.0)
    calls = []
    measured = jump_explorer.energy_distance
    monkeypatch.setattr(
        jump_explorer, "energy_distance", lambda x, y: calls.append(1) or measured(x, y)
    )
    assert explorer.set_sampling(2, 0.5)
    assert calls == [] and explorer.readout.value == first
    assert explorer.set_sampling(3, 0.5)  # a new setting is measured
    assert len(calls) == 2


def drawn_points(fig) -> tuple[int, int]:
    """(markers, line points) the browser redraws when the figure changes."""
    markers = sum(len(t.x) for t in fig.data if "markers" in t.mode)
    lines = sum(len(t.x) for t in fig.data if t.mode == "lines")
    return markers, lines


def test_each_panel_draws_at_most_the_caps_and_the_numbers_use_every_point():
    """Chapter 04's size (a cloud of 300, 300 samples, 600 data points; 900 and 1,200
    markers before): a move draws evenly spaced subsets within the caps, the readout's
    numbers use every point."""
    flow = exact_flow()
    g = lambda x, t, s: flow.denoiser(x, t)
    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(3))
    x0 = flow.mixture.sample(300, torch.Generator().manual_seed(4)).float()
    target = flow.mixture.sample(600, torch.Generator().manual_seed(5)).float()
    w = JumpExplorer(
        learned=lambda x, t, s: ct.jump(g, x.float(), t, s),
        exact=lambda x, t, s: ct.exact_jump(flow.denoiser, x, t, s, rtol=1e-4, atol=1e-4),
        cloud=lambda t: x0 + t * z,
        x_T=80.0 * torch.randn(300, 2, generator=torch.Generator().manual_seed(6)),
        target=target,
        times=(1.0, 2.0),
        max_nfe=3,
        precompute=False,
    )
    assert (MAX_DRAWN_MARKERS, MAX_DRAWN_LINE_POINTS) == (400, 4_000)
    w.t_slider.value = 1.0  # a reader's move
    assert drawn_points(w.figure) == (3 * 133, 133 * 3)  # x_t, both landings; segments
    keep = evenly_spaced(300, 133)
    x, learned, exact = w.jumped(1.0, 0.25)
    assert list(w.figure.data[0].x) == pytest.approx(x[keep, 0].tolist())
    error = float((learned.double() - exact.double()).norm(dim=1).mean())  # all 300
    assert w._error == pytest.approx(error, rel=1e-12)
    assert f"mean |learned G - exact G| = {error:.3f}" in w.readout.value
    assert "drawing 133 of 300 points of the jump panel" in w.readout.value
    w.nfe_slider.value = 3
    markers, lines = drawn_points(w.sampling_figure)
    assert markers == 200 + 100 + 100 <= MAX_DRAWN_MARKERS and lines == 60 * 4
    _, end, exact_end = w.sampled(3, 0.0)
    drawn = evenly_spaced(300, 100)
    assert list(w.sampling_figure.data[3].x) == pytest.approx(end[drawn, 0].tolist())
    assert list(w.sampling_figure.data[2].x) == pytest.approx(exact_end[drawn, 0].tolist())
    ed = (energy_distance(end, target), energy_distance(exact_end, target))  # all points
    assert w._energy == pytest.approx(ed, rel=1e-9)
    assert "drawing 100 of 300 samples of each sampler and 200 of 600 data points" in (
        w.readout.value
    )
    with pytest.raises(ValueError, match="max_markers .* must be an integer >= 1"):
        JumpExplorer(w.learned, w.exact, w.cloud, w.x_T, target, max_markers=-1)
