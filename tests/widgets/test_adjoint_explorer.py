"""widgets/adjoint_explorer.py: the first picture is in the state the browser renders first,
the marker and the live errors follow the steps, bad input keeps the picture and says why."""

from __future__ import annotations

import pytest

from pflow_explore.adjoint import gaussian_problem
from pflow_explore.widgets.adjoint_explorer import AdjointExplorer, checked_steps

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = [10, 25, 50]
PEAK = {
    "naive": [60.0, 150.0, 300.0],
    "adjoint": [18.0, 18.5, 19.0],
    "torchdiffeq": [17.0, 18.0, 18.0],
}
CPU = {k: [0.1, 0.25, 0.5] for k in PEAK}
SLOPES = {"naive": (6.0, 0.0), "adjoint": (0.02, 18.0), "torchdiffeq": (0.02, 17.0)}


@pytest.fixture(scope="module")
def explorer():
    return AdjointExplorer(STEPS, PEAK, CPU, SLOPES, gaussian_problem(0), error_steps=(4, 16, 64))


def test_the_first_picture_is_in_the_state_the_browser_first_renders(explorer):
    state = explorer.figure._widget_data
    k = explorer._n_fixed
    assert state[0]["x"] == STEPS and state[k]["x"] == [25, 25]
    assert len(state[k + 2]["y"]) == 3 and all(y > 0 for y in state[k + 2]["y"])
    assert "25 steps" in explorer.readout.value


def test_a_first_move_either_way_finds_its_errors_computed(monkeypatch):
    fresh = AdjointExplorer(STEPS, PEAK, CPU, SLOPES, gaussian_problem(0), error_steps=(4,))
    assert fresh.n == 25
    computed = []
    real = fresh.error.__func__

    def counted(self, label, n):
        computed.append((label, n) not in self._errors)
        return real(self, label, n)

    monkeypatch.setattr(AdjointExplorer, "error", counted)
    for n in (10, 50):
        fresh.steps_slider.value = n
        assert fresh.figure.data[-3].x == (n, n)
    assert computed and not any(computed)  # both neighbours of 25 came from the cache
    fresh.set_steps(37)
    assert any(computed)  # off the grid: computed when asked


def test_marker_and_errors_follow_the_steps(explorer):
    assert explorer.set_steps(10)
    coarse = list(explorer.figure.data[-1].y)
    assert explorer.set_steps(50)
    fine = list(explorer.figure.data[-1].y)
    assert all(f < c for f, c in zip(fine, coarse, strict=True))
    assert explorer.steps_slider.value == 50 and explorer.steps_box.value == 50
    assert explorer.set_steps(37)  # off the grid: the box holds it, the slider stays
    assert explorer.steps_box.value == 37 and explorer.figure.data[-3].x == (37, 37)
    explorer.steps_slider.value = 10  # the slider moves the figure
    assert explorer.figure.data[-3].x == (10, 10)


@pytest.mark.parametrize("bad", [-1, 0, 1, 2.5, "ten", True, 10_000])
def test_bad_steps_keep_the_picture_and_say_why(explorer, bad):
    explorer.set_steps(25)
    before = list(explorer.figure.data[-1].y)
    assert not explorer.set_steps(bad)
    assert "steps must be" in explorer.message.value
    assert list(explorer.figure.data[-1].y) == before and explorer.steps_box.value == 25


def test_checked_steps():
    assert checked_steps(2) == 2 and checked_steps(400.0) == 400
    with pytest.raises(ValueError, match="between 2 and 400"):
        checked_steps(401)


def test_stored_errors_are_the_computed_ones_and_a_second_explorer_computes_none(
    data_dir, monkeypatch
):
    import pflow_explore.widgets.adjoint_explorer as module

    problem = gaussian_problem(0)
    first = AdjointExplorer(STEPS, PEAK, CPU, SLOPES, problem, error_steps=(4,), store="t")
    live = AdjointExplorer(STEPS, PEAK, CPU, SLOPES, problem, error_steps=(4,))
    stored = {key: live.error(*key) for key in first._errors}
    assert len(stored) == 3 * 4 and first._errors == stored  # 3 routes at 4, 10, 25, 50 steps

    def no_gradients(*args, **kw):
        raise AssertionError("a gradient was computed")

    monkeypatch.setattr(module.ad, "relative_error", no_gradients)
    second = AdjointExplorer(STEPS, PEAK, CPU, SLOPES, problem, error_steps=(4,), store="t")
    assert second._errors == stored  # read back: not one gradient
    assert list(second.figure.data[-1].y) == [stored[label, 25] for label in module.LIVE]
    with pytest.raises(AssertionError, match="gradient"):  # another problem: computed anew
        AdjointExplorer(STEPS, PEAK, CPU, SLOPES, gaussian_problem(1), error_steps=(4,), store="t")


def test_a_fresh_clone_opens_chapter_07s_explorer_with_the_shipped_errors(
    shipped_only, monkeypatch
):
    import pflow_explore.widgets.adjoint_explorer as module
    from pflow_explore.chapters import adjoint as chapter

    shipped_only("adjoint")
    monkeypatch.setattr(module.ad, "relative_error", lambda *a: pytest.fail("computed again"))
    mem = chapter.memory(chapter.settings("cpu"))
    slopes = {r: chapter.fit_line([float(n) for n in mem.steps], mem.peak[r]) for r in mem.peak}
    problem = gaussian_problem(0)
    w = AdjointExplorer(mem.steps, mem.peak, mem.cpu, slopes, problem, store=chapter.CHAPTER)
    assert len(w._errors) == 3 * len({*mem.steps, *module.ERROR_STEPS})
