"""widgets/jump_explorer.py: the jump panel follows t and s, the sampling panel follows NFE
and gamma, bad input keeps the picture and says why, and results are cached."""

from __future__ import annotations

import pytest
import torch

from pflow_explore import consistency as ct
from pflow_explore.chapters.ctm import exact_flow
from pflow_explore.widgets.jump_explorer import JumpExplorer


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
