"""widgets/code_explorer.py: the first picture is in the state the browser renders first,
the picture and the stars follow the controls, bad input keeps the picture and says why, and
a live edit answers well under a second."""

from __future__ import annotations

import time

import pytest
import torch

from pflow_explore.datasets.digits import digits
from pflow_explore.nets import MLP
from pflow_explore.widgets.code_explorer import CodeExplorer, checked_setting

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = {
    "mask": dict(method=["CODE", "CODE, no clip", "SDEdit"], to_input=[1.0, 1.2, 1.1],
                 to_clean=[0.5, 0.6, 0.55], fd=[1.0, 2.0, 3.0], fd_se=[0.1] * 3)
}  # fmt: skip


@pytest.fixture(scope="module")
def explorer():
    torch.manual_seed(0)
    clean = digits(8, "test")[0][:8].flatten(1)
    return CodeExplorer(MLP(64, 32, 2).eval(), clean, ROWS, ode_steps=4, k=4)


def test_the_first_picture_is_in_the_state_the_browser_first_renders(explorer):
    state = explorer.figure._widget_data
    assert len(state[0]["z"]) == 4 * 10  # four rows of 8 + 2 padded pixels
    assert state[1]["x"] == [1.0] and len(state[4]["x"]) == 1
    assert "mask" in explorer.readout.value
    assert explorer.strength.value < explorer.strength.max  # the first slider can move right


def test_the_picture_follows_the_controls(explorer):
    before = [list(r) for r in explorer.figure.data[0].z]
    explorer.strength.value = 1.0
    assert [list(r) for r in explorer.figure.data[0].z] != before
    assert explorer.set(corruption="blur", K=0)
    assert "blur" in explorer.readout.value and "no measured run" in explorer.readout.value
    assert explorer.figure.data[1].x == ()
    start = time.perf_counter()
    assert explorer.set(K=16, corruption="mask")
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("bad", [-1, float("nan")])
def test_bad_eta_keeps_the_picture_and_says_why(explorer, bad):
    explorer.set(strength=0.6)
    before = [list(r) for r in explorer.figure.data[0].z]
    explorer.eta.value = bad
    assert "eta must be" in explorer.message.value
    assert [list(r) for r in explorer.figure.data[0].z] == before
    assert explorer.eta.value == explorer.state[4]


def test_checked_setting():
    assert checked_setting(0.5, 0.2, 3, 0.1, 2.0) == (0.5, 0.2, 3, 0.1, 2.0)
    bad = [((2, 0.2, 3, 0.1, 2), "strength"), ((0.5, 0.95, 3, 0.1, 2), "t_L")]
    bad += [((0.5, 0.2, 2.5, 0.1, 2), "K"), ((0.5, 0.2, 3, 1.0, 2), "step")]
    for args, word in bad:
        with pytest.raises(ValueError, match=word):
            checked_setting(*args)
