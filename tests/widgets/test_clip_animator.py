"""widgets/clip_animator.py: the first picture is in the state the browser renders first,
the frame slider steps, the case and overlays switch instantly, bad input keeps the picture
and says why."""

from __future__ import annotations

import numpy as np
import pytest

from pflow_explore import animation as an
from pflow_explore.widgets.clip_animator import ClipAnimator

VARIANTS = ("A", "B")


@pytest.fixture(scope="module")
def animator():
    clip = an.make_clipart("stick", 0.1)
    V0, kp0 = clip.vertices.numpy(), clip.keypoints.numpy()
    anims = {}
    for motion, shift in (("walk", 0.1), ("jump", 0.2)):
        for j, v in enumerate(VARIANTS):
            steps = np.arange(6, dtype=np.float32)[:, None, None] * shift * (1 + j)
            P = np.repeat(kp0[:, None], 4, 1)
            anims[f"stick/{motion}/{v}"] = (V0[None] + steps, kp0[None] + steps, P)
    return ClipAnimator(anims, {"stick": clip.faces.numpy()}, VARIANTS)


def test_first_picture_is_in_the_state_the_browser_renders(animator):
    state = animator.figure._widget_data
    assert len(state[1]["x"]) > 100  # the mesh
    assert animator.slider.value == 0 and animator.slider.max == 5
    assert "frame 0 of 5" in animator.readout.value


def test_slider_and_case_switches_redraw(animator):
    before = list(animator.figure.data[3].x)
    animator.slider.value = 3
    assert animator.step == 3 and list(animator.figure.data[3].x) != before
    x3 = list(animator.figure.data[3].x)
    assert animator.set_case("stick", "jump", "B") and animator.step == 3
    assert list(animator.figure.data[3].x) != x3
    assert animator.set_overlays(False, False, True)
    assert len(animator.figure.data[1].x) == 0 and len(animator.figure.data[4].x) == 0
    assert animator.set_overlays(True, True, True) and len(animator.figure.data[1].x) > 0


def test_bad_input_keeps_the_picture_and_says_why(animator):
    kept = list(animator.figure.data[3].x)
    assert not animator.set_case("stick", "dance", "A")
    assert "no animation" in animator.message.value and list(animator.figure.data[3].x) == kept
    animator.interval_box.value = -1
    assert "frame ms" in animator.message.value and animator.play.interval != -1
    assert animator.set_interval(300) and animator.play.interval == 300
    assert animator.message.value == ""
