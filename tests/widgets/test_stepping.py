"""StepControls (the play/step/slider row and step_to), on a minimal host widget that records
the steps it draws."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

from pflow_explore.widgets.messages import message_label, show_rejected
from pflow_explore.widgets.stepping import StepControls


class Host(StepControls, widgets.VBox):
    """Steps 0 .. n_steps; records every step_to; step 3 fails when ``fail_at`` is 3."""

    def __init__(self, n: int, **row: object) -> None:
        self.n = n
        self._step = row.get("value", 0)
        self.shown: list[int] = []
        self.fail_at: int | None = None
        self.message = message_label()
        row_box = self.step_row(100, **row)
        super().__init__([row_box, self.message])

    @property
    def n_steps(self) -> int:
        return self.n

    def _show_step(self, i: int) -> None:
        if i == self.fail_at:
            raise ValueError("step 3 is broken")
        self.shown.append(i)


def test_row_holds_play_buttons_slider_and_label_in_that_order():
    host = Host(5, noun="frame", time_label=widgets.Label)
    row = host.children[0]
    assert list(row.children) == [
        host.play,
        host.prev_button,
        host.next_button,
        host.slider,
        host.time_label,
    ]
    assert isinstance(host.slider, widgets.IntSlider) and isinstance(host.time_label, widgets.Label)
    assert (host.slider.min, host.slider.max, host.play.max) == (0, 5, 5)
    assert host.slider.description == "frame"
    assert host.prev_button.tooltip == "previous frame" and host.next_button.tooltip == "next frame"
    assert host.slider.layout.width == "360px"
    # Play drives the slider in the browser: a jslink between their values
    assert host.play_link.source == (host.play, "value")
    assert host.play_link.target == (host.slider, "value")


def test_slider_and_buttons_step_and_buttons_clamp_at_the_ends():
    host = Host(3)
    host.slider.value = 2
    assert host.shown == [2] and host.step == 2
    host.next_button.click()
    host.next_button.click()  # already at the end: stays at 3
    host.prev_button.click()
    assert host.shown == [2, 3, 3, 2]
    assert host.slider.value == 2


def test_a_failing_step_is_a_message_not_a_traceback():
    host = Host(5)
    host.fail_at = 3
    host.slider.value = 3
    assert "step 3 is broken" in host.message.value
    assert host.step == 0


def test_fit_step_range_grows_and_shrinks_without_stepping():
    host = Host(4, value=4)
    host.n, host._step = 9, 7
    host._fit_step_range()
    assert (host.slider.max, host.play.max, host.slider.value, host.play.value) == (9, 9, 7, 7)
    host.n, host._step = 2, 1
    host._fit_step_range()
    assert (host.slider.max, host.play.max, host.slider.value, host.play.value) == (2, 2, 1, 1)
    assert host.shown == []  # moving the controls did not call step_to


def test_row_options_value_width_and_disabled():
    host = Host(0, value=0, slider_width=None, disabled=True, last=6)
    assert host.slider.disabled and host.slider.max == 6 and host.slider.layout.width is None


def test_show_rejected_says_why_and_what_stays():
    label = message_label()
    assert show_rejected(label, ValueError("bad value."), "Showing the previous picture") is False
    assert "bad value. Showing the previous picture." in label.value
    assert "pflow-message" in label._dom_classes


def test_step_to_checks_the_index_draws_it_and_moves_the_slider():
    host = Host(4)
    host.step_to(3)
    assert host.shown == [3] and host.step == 3 and host.slider.value == 3
    assert host.play.value == 0  # Play follows in the browser only (jslink) by default
    for bad in (5, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"step must be an integer in \[0, 4\]"):
            host.step_to(bad)
    assert host.shown == [3] and host.step == 3  # nothing drawn for a bad index


def test_step_noun_names_the_index_and_play_follows_moves_play():
    class Frames(Host):
        step_noun = "frame"
        play_follows = True

    host = Frames(2)
    host.step_to(2)
    assert (host.slider.value, host.play.value) == (2, 2)
    with pytest.raises(ValueError, match="frame must be an integer in"):
        host.step_to(3)


def test_a_host_without_show_step_says_what_it_lacks():
    class Bare(StepControls):
        n_steps = 2
        _step = 0

    with pytest.raises(NotImplementedError, match="_show_step"):
        Bare().step_to(1)
