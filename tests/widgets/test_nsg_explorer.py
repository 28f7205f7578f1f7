"""widgets/nsg_explorer.py: the first picture is in the state the browser renders first,
the frame row steps both videos, the fake type, video number and reference size redraw,
and bad input keeps the picture and says why."""

from __future__ import annotations

import pytest
import torch

from pflow_explore.widgets.nsg_explorer import NSGExplorer

KINDS = ("real", "flicker", "zoom")


@pytest.fixture
def explorer():
    g = torch.Generator().manual_seed(0)
    videos = {k: torch.rand(3, 5, 6, 6, generator=g) for k in KINDS}
    maps = {k: torch.randn(3, 5, 6, 6, generator=g) for k in KINDS}
    sizes = (4, 8)
    scores = {n: {k: torch.randn(10, generator=g) + i for i, k in enumerate(KINDS)} for n in sizes}
    ex = {n: {k: torch.randn(3, generator=g) for k in KINDS} for n in sizes}
    thr = {4: 0.5, 8: 0.7}
    tests = {n: {k: [0.1, 0.05, 0.01] for k in KINDS} for n in sizes}
    return NSGExplorer(videos, maps, scores, ex, thr, tests), videos


def test_first_picture_is_in_the_initial_state(explorer):
    w, videos = explorer
    state = w.figure._widget_data
    assert state[0]["z"] == videos["real"][0, 0].flip(0).tolist()
    assert len(state[4]["y"]) == 10 and state[7]["y"] == [0.7, 0.7]  # largest reference first
    assert w.slider.value == 0 and w.slider.max == 4  # the page's first slider can move right
    assert "8 real videos" in w.readout.value


def test_controls_redraw(explorer):
    w, videos = explorer
    w.step_to(3)
    assert list(map(list, w.figure.data[2].z)) == videos["flicker"][0, 3].flip(0).tolist()
    assert w.set_kind("zoom") and "zoom" in w.figure.layout.annotations[2].text
    assert list(map(list, w.figure.data[2].z)) == videos["zoom"][0, 3].flip(0).tolist()
    assert w.set_index(2) and w.index_box.value == 2
    assert w.set_size(4) and w.figure.data[7].y == (0.5, 0.5) and w.size_slider.value == 4


@pytest.mark.parametrize("bad", [-1, 3, 1.5, "two", True])
def test_bad_index_keeps_the_picture_and_says_why(explorer, bad):
    w, _ = explorer
    before = w.figure.data[0].z
    assert not w.set_index(bad)
    assert "video #" in w.message.value and w.figure.data[0].z == before and w.index_box.value == 0


def test_bad_kind_and_size_are_refused(explorer):
    w, _ = explorer
    assert not w.set_kind("real") and "fake type" in w.message.value
    assert not w.set_size(5) and "reference size" in w.message.value
    with pytest.raises(ValueError, match="real"):
        NSGExplorer({"zoom": torch.zeros(1, 3, 2, 2)}, {}, {}, {}, {}, {})
