"""widgets/mr_explorer.py: the solver explorer's first picture is in the state the browser
renders first, its panels follow NFE and solver, bad input keeps the picture and says why;
the restoration stepper steps, recomputes on a new setting and refuses bad ones."""

from __future__ import annotations

import pytest
import torch

from pflow_explore import mean_reverting as mr
from pflow_explore.chapters import mr_sampler as C
from pflow_explore.metrics import exact_w2
from pflow_explore.widgets.mr_explorer import RestorationStepper, SolverExplorer, method_of
from pflow_explore.widgets.redraw_budget import (
    MAX_DRAWN_LINE_POINTS,
    MAX_DRAWN_MARKERS,
    evenly_spaced,
)

S = C.settings("tiny")


@pytest.fixture(scope="module")
def explorer():
    mix, sch = C.mixture_problem(S), C.schedule(S)
    start = float(mr.time_grid(sch, 2, t_end=S.t_end)[0])
    return SolverExplorer(
        mix,
        mix.sample(120, start, torch.Generator().manual_seed(0)),
        mix.mixture.sample(120, torch.Generator().manual_seed(1)).double(),
        S.t_end,
        nfe_grid=(3, 10, 30),
        reference={"EM (chapter)": ([3, 30], [0.5, 0.2])},
        floor=0.1,
    )


def test_the_first_picture_is_in_the_state_the_browser_first_renders(explorer):
    state = explorer.figure._widget_data
    assert [len(state[i]["x"]) for i in (0, 2)] == [120, 120]
    assert len(state[-2]["x"]) == 3 and state[-1]["x"] == [10]  # live curve and the star
    assert "10 NFE" in explorer.readout.value


def test_panels_follow_nfe_and_solver(explorer):
    assert explorer.set_solver("MRS ODE", "data", 2) and explorer.set_nfe(30)
    fine = list(explorer.figure.data[2].x)
    assert explorer.set_nfe(3)
    assert list(explorer.figure.data[2].x) != fine
    assert explorer.nfe_slider.value == 3 and explorer.nfe_box.value == 3
    assert explorer.set_nfe(17)  # off the grid: the box holds it, the slider stays
    assert explorer.nfe_box.value == 17 and explorer.figure.data[-1].x == (17,)
    # the SDE family has no noise form and order 2 at most
    assert explorer.set_solver("MRS SDE", "noise", 3)
    assert (explorer.prediction, explorer.order) == ("data", 2)
    assert explorer.prediction_buttons.disabled and explorer.order_slider.max == 2
    assert explorer.set_solver("Euler-Maruyama", "data", 1)
    assert "euler_maruyama" in explorer.readout.value


@pytest.mark.parametrize("bad", [-1, 0, 2.5, "ten", True, 10_000])
def test_bad_nfe_keeps_the_picture_and_says_why(explorer, bad):
    explorer.set_nfe(10)
    before = list(explorer.figure.data[2].x)
    assert not explorer.set_nfe(bad)
    assert "NFE must be" in explorer.message.value
    assert list(explorer.figure.data[2].x) == before and explorer.nfe_box.value == 10


def test_method_of_names_each_family():
    assert method_of("MRS ODE", "noise", 3) == ("mrs_ode_noise", 3)
    with pytest.raises(ValueError, match="orders 1 to 1"):
        method_of("Euler (PF-ODE)", "data", 2)
    with pytest.raises(ValueError, match="data prediction only"):
        method_of("MRS SDE", "noise", 1)


def test_stepper_steps_and_changes_setting():
    sch, g = C.schedule(S), torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 64, generator=g) * 2 - 1
    pairs = {"denoise": (x0, x0 + 0.2 * torch.randn(4, 64, generator=g)), "copy": (x0, x0)}
    exact = lambda mu: lambda x, t: mu  # predicts the condition: a stand-in network
    solvers = {k: C.SOLVERS[k] for k in ("MRS-2 ODE data", "Euler-Maruyama")}
    st = RestorationStepper(pairs, {"stand-in": exact}, sch, solvers, (1, 8, 8), S.t_end, nfe=6)
    assert st.n_steps == 6 and "step 0 / 6" in st.figure.layout.title.text
    first = st.figure.data[0].z.copy()
    st.step_to(6)
    assert (st.figure.data[0].z != first).any() and st.slider.value == 6
    assert st.set_setting(solver="Euler-Maruyama", nfe=12) and st.n_steps == 12
    assert not st.set_setting(nfe=1) and "NFE" in st.message.value and st.n_steps == 12
    assert not st.set_setting(task="deblur") and "task" in st.message.value
    assert st.task == "denoise"


def drawn_points(fig) -> tuple[int, int]:
    """(markers, line points) the browser redraws when the figure changes (plotly.js marks
    a trace without a mode and of fewer than 20 points with markers and lines)."""
    markers = lines = 0
    for t in fig.data:
        mode = t.mode or ("lines+markers" if len(t.x) < 20 else "lines")
        markers += len(t.x) if "markers" in mode else 0
        lines += len(t.x) if "lines" in mode else 0
    return markers, lines


def test_a_move_draws_at_most_the_caps_and_w2_uses_every_sample():
    """Chapter 05's size (400 samples, 400 data points: 832 markers before): a move draws
    evenly spaced subsets within the caps, and fewer whole paths at a large NFE."""
    mix, sch = C.mixture_problem(S), C.schedule(S)
    start = float(mr.time_grid(sch, 2, t_end=S.t_end)[0])
    x_start = mix.sample(400, start, torch.Generator().manual_seed(2))
    data = mix.mixture.sample(400, torch.Generator().manual_seed(3)).double()
    reference = {"EM (chapter)": ([3, 30], [0.5, 0.2])}
    w = SolverExplorer(mix, x_start, data, S.t_end, nfe_grid=(3, 10), reference=reference)
    w.nfe_slider.value = 3  # a reader's move
    markers, lines = drawn_points(w.figure)
    fixed = 2 + 2 + 1  # the reference curve, the live curve, the star
    assert markers == 2 * 197 + fixed <= MAX_DRAWN_MARKERS == 400
    assert lines == 40 * 5 + 2 + 2 <= MAX_DRAWN_LINE_POINTS == 4_000  # every path drawn
    x, _, w2 = w.run("mrs_ode_data", 2, 3)
    keep = evenly_spaced(400, 197)
    assert list(w.figure.data[2].x) == pytest.approx(x[keep, 0].float().tolist())
    assert w2 == pytest.approx(exact_w2(x, data), rel=1e-12)  # all 400 samples
    assert f"W2 to the data <b>{w2:.4f}</b>" in w.readout.value
    assert "drawing 197 of 400 samples and 197 of 400 data points" in w.readout.value
    assert w.set_nfe(500)  # the box's largest NFE: 7 whole paths of 502 points
    markers, lines = drawn_points(w.figure)
    assert markers <= 400 and lines == 7 * 502 + 2 + 2 <= 4_000
    assert "and 7 of 40 paths" in w.readout.value
    with pytest.raises(ValueError, match="max_line_points .* must be an integer >= 1"):
        SolverExplorer(mix, x_start, data, S.t_end, max_line_points=0)


def test_the_stored_curve_is_the_computed_one_and_a_second_explorer_samples_no_grid(
    data_dir, monkeypatch
):
    mix, sch = C.mixture_problem(S), C.schedule(S)
    start = float(mr.time_grid(sch, 2, t_end=S.t_end)[0])
    x_start = mix.sample(60, start, torch.Generator().manual_seed(4))
    data = mix.mixture.sample(60, torch.Generator().manual_seed(5)).double()
    args = (mix, x_start, data, S.t_end)
    first = SolverExplorer(*args, nfe_grid=(3, 10, 30), store="t")
    live = SolverExplorer(*args, nfe_grid=(3, 10, 30))
    assert first.curve() == live.curve()  # what the explorer computes, bit for bit
    runs = []
    real = SolverExplorer.run
    monkeypatch.setattr(SolverExplorer, "run", lambda self, *a: runs.append(a) or real(self, *a))
    second = SolverExplorer(*args, nfe_grid=(3, 10, 30), store="t")
    assert runs == [("mrs_ode_data", 2, 10)]  # the star's samples only, no grid
    assert list(second.figure.data[-2].y) == live.curve()
    SolverExplorer(mix, x_start + 1e-3, data, S.t_end, nfe_grid=(3, 10, 30), store="t")
    assert len(runs) == 1 + 3 + 1  # other samples: the whole grid anew, then the star


def test_a_fresh_clone_opens_chapter_05_with_the_shipped_curve_and_baseline(
    shipped_only, monkeypatch
):
    shipped_only("mr_sampler")
    s, sample = C.settings("cpu"), mr.sample
    monkeypatch.setattr(mr, "sample", lambda *a, **k: pytest.fail("sampled again"))
    assert set(C.em_baseline(s, (50, 200))) == {50, 200}  # as the notebook asks
    monkeypatch.setattr(mr, "sample", sample)
    runs = []
    real = SolverExplorer.run
    monkeypatch.setattr(SolverExplorer, "run", lambda self, *a: runs.append(a) or real(self, *a))
    mix, sch = C.mixture_problem(s), C.schedule(s)
    start = float(mr.time_grid(sch, 2, t_end=s.t_end)[0])  # the notebook's explorer
    SolverExplorer(
        mix,
        mix.sample(400, start, torch.Generator().manual_seed(4)),
        mix.mixture.sample(400, torch.Generator().manual_seed(5)).double(),
        s.t_end,
        nfe_grid=sorted({3, 5, 10, *s.mix_nfe}),
        store=C.CHAPTER,
    )
    assert runs == [("mrs_ode_data", 2, 10)]  # the star only: the curve was shipped
