"""widgets/sr_explorer.py: the first picture is in the state the browser renders first, the
NFE slider changes the diffusion panel, the seed and the index change the picture, and bad
input keeps the picture and says why."""

from __future__ import annotations

import pytest
import torch

from pflow_explore import super_resolution as sr
from pflow_explore.widgets.sr_explorer import SRExplorer

pytestmark = pytest.mark.usefixtures("one_thread")


def _explorer() -> SRExplorer:
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(5, 1, 8, 8, generator=g) * 2 - 1
    deg = sr.SRDegradation(2, 0.5, 0.05)

    def sharpen(lr_up, gen):  # a stand-in one-step model: LRup plus noise
        return lr_up + 0.3 * torch.randn(lr_up.shape, generator=gen)

    def diffusion(lr_up, nfe, gen):  # a stand-in multi-step model: more NFE, less noise
        return lr_up + torch.randn(lr_up.shape, generator=gen) / nfe

    return SRExplorer(hr, deg, {"stand-in": sharpen}, diffusion, nfe_options=(1, 3, 9))


@pytest.fixture(scope="module")
def explorer():
    return _explorer()


def test_the_first_picture_is_in_the_state_the_browser_first_renders(explorer):
    state = explorer.figure._widget_data
    assert len(state) == 1 and state[0]["type"] == "image"
    assert explorer.figure.data[0].z.shape[1] > 5 * 8  # truth, y, LRup, model, diffusion
    # the second largest NFE first, so the first slider can move right in the browser
    assert "diffusion, 3 NFE" in explorer.figure.layout.title.text
    assert explorer.nfe_slider.value == 3 and explorer.nfe_slider.options[-1] == 9
    assert "dB" in explorer.readout.value


def test_the_nfe_slider_changes_the_diffusion_panel(explorer):
    explorer.set_nfe(9)
    before = explorer.figure.data[0].z.copy()
    explorer.nfe_slider.value = 1  # as the browser does
    after = explorer.figure.data[0].z
    assert explorer.nfe == 1 and (after != before).any()
    w = before.shape[1] // 5
    assert (after[:, : 4 * w] == before[:, : 4 * w]).all()  # only the last panel moved
    assert "1 NFE" in explorer.figure.layout.title.text


def test_seed_and_index_change_the_picture(explorer):
    first = explorer.figure.data[0].z.copy()
    assert explorer.set_seed(3) and (explorer.figure.data[0].z != first).any()
    assert explorer.set_index(4) and explorer.index_box.value == 4
    assert "image 4" in explorer.figure.layout.title.text


@pytest.mark.parametrize("bad", [-1, 5, 2.5, "two", True])
def test_bad_index_keeps_the_picture_and_says_why(explorer, bad):
    explorer.set_index(1)
    before = explorer.figure.data[0].z.copy()
    assert not explorer.set_index(bad)
    assert "image index must be" in explorer.message.value
    assert (explorer.figure.data[0].z == before).all() and explorer.index_box.value == 1
    assert "pflow-input" in explorer.index_box._dom_classes


def test_bad_nfe_and_seed_are_refused(explorer):
    assert not explorer.set_nfe(4) and "NFE must be one of" in explorer.message.value
    assert not explorer.set_seed(-2) and "noise seed" in explorer.message.value
    assert explorer.set_nfe(3) and explorer.message.value == ""
