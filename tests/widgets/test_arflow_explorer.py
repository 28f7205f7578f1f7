"""widgets/arflow_explorer.py: the first picture is in the state the browser renders first,
stepping grows the chunk strip and the heat map, a new class or seed recomputes, bad input
keeps the picture and says why."""

from __future__ import annotations

import pytest
import torch

from pflow_explore.nets.hybrid_attention import ARFlowTransformer
from pflow_explore.widgets.arflow_explorer import ARFlowExplorer


@pytest.fixture(scope="module")
def explorer():
    torch.manual_seed(0)
    m = ARFlowTransformer(image_size=8, patch=2, dim=16, depth=1, heads=2)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    return ARFlowExplorer(m, n_steps=6, label=2, seed=0, step=2)


def rows_shown(fig):
    return sum(any(v is not None for v in row) for row in fig.data[1].z)


def test_the_first_picture_is_in_the_state_the_browser_first_renders(explorer):
    state = explorer.figure._widget_data
    assert len(state[2]["y"]) == 6 and state[3]["x"] == [2]
    assert explorer.slider.value == 2 and explorer.slider.max == 6
    assert "step 2 / 6" in explorer.readout.value


def test_stepping_grows_the_sequence(explorer):
    explorer.step_to(1)
    strip1, rows1 = explorer.figure.data[0].z.copy(), rows_shown(explorer.figure)
    explorer.step_to(5)
    assert rows_shown(explorer.figure) == 5 > rows1 == 1
    assert (explorer.figure.data[0].z != strip1).any()
    assert explorer.slider.value == 5 and explorer.figure.data[3].x == (5,)
    shares = explorer.shares
    assert abs(shares[4, :5].sum() - 1) < 1e-5 and (shares[4, 5:] == 0).all()
    explorer.step_to(0)
    assert rows_shown(explorer.figure) == 0 and "pure noise" in explorer.readout.value


def test_class_and_seed_recompute(explorer):
    explorer.step_to(6)
    before = explorer.figure.data[0].z.copy()
    assert explorer.set_seed(7) and explorer.seed_box.value == 7
    assert (explorer.figure.data[0].z != before).any()
    norms = list(explorer.figure.data[2].y)
    assert explorer.set_label(8) and explorer.class_menu.value == 8
    assert list(explorer.figure.data[2].y) != norms


@pytest.mark.parametrize("bad", [-1, 1000, 2.5, "x", True])
def test_bad_seed_keeps_the_picture_and_says_why(explorer, bad):
    explorer.set_seed(3)
    before = explorer.figure.data[0].z.copy()
    assert not explorer.set_seed(bad)
    assert "noise seed must be" in explorer.message.value
    assert (explorer.figure.data[0].z == before).all() and explorer.seed_box.value == 3


def test_bad_label_and_step(explorer):
    assert not explorer.set_label(11)
    assert "digit must be" in explorer.message.value
    with pytest.raises(ValueError, match="step"):
        explorer.step_to(99)
