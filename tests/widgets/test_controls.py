"""widgets.controls: moving a control without its callback, routing controls to setters,
read-only views of the state shown, index and number checks, setters that keep the last
good setting on bad input."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import pytest

from pflow_explore.widgets.controls import (
    checked_choice,
    checked_index,
    checked_number,
    kept_on_error,
    put_back,
    quietly,
    send_values,
    set_quietly,
    shown,
    try_setting,
)
from pflow_explore.widgets.messages import message_label


@pytest.mark.parametrize("bad", [-1, 5, 1.5, True])
def test_checked_index_rejects_what_is_not_an_index(bad):
    with pytest.raises(ValueError, match=r"frame must be an integer in \[0, 4\]"):
        checked_index(bad, 4, "frame")


def test_checked_index_accepts_integral_values():
    assert checked_index(2.0, 4) == 2 and type(checked_index(2.0, 4)) is int


def test_quietly_silences_a_callback_and_restores_the_flag_after_an_error():
    class Owner:
        _quiet = False

    owner, calls = Owner(), []
    box = widgets.IntText(value=0)
    box.observe(lambda c: calls.append(c["new"]) if not owner._quiet else None, names="value")
    set_quietly(owner, box, 5)
    assert box.value == 5 and calls == [] and owner._quiet is False
    with pytest.raises(RuntimeError), quietly(owner):
        raise RuntimeError
    assert owner._quiet is False
    box.value = 6
    assert calls == [6]


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), True, "1", None, 1 + 0j])
def test_checked_number_rejects_what_is_not_a_finite_number_at_or_above_the_bound(bad):
    with pytest.raises(ValueError, match=r"guidance must be a finite number >= 0, got "):
        checked_number(bad, "guidance", 0.0)


def test_checked_number_bound_is_inclusive_unless_above_and_accepts_numpy():
    assert checked_number(0, "x", 0.0) == 0.0 and type(checked_number(0, "x", 0.0)) is float
    assert checked_number(np.float32(2.5), "x", 0.0) == 2.5
    assert checked_number(np.int64(3), "x", 0.0, above=True) == 3.0
    with pytest.raises(ValueError, match=r"^scale must be a finite number > 0, got 0$"):
        checked_number(0, "scale", 0.0, above=True)
    with pytest.raises(ValueError, match=r"^sigma_max must be a finite number > 0.002, got 0.002$"):
        checked_number(0.002, "sigma_max", 0.002, above=True)
    with pytest.raises(ValueError, match=r"^tolerance must be a percentage >= 0, got -1$"):
        checked_number(-1, "tolerance", 0.0, what="a percentage")


def test_send_values_calls_the_setter_unless_the_widget_moves_its_own_controls():
    class Owner:
        _holding = False

    owner, got = Owner(), []
    slider, box = widgets.FloatSlider(value=0.0), widgets.FloatText(value=0.0)
    send_values(owner, got.append, slider, box, flag="_holding")
    slider.value, box.value = 0.5, 2.0
    set_quietly(owner, slider, 0.25, "_holding")
    assert got == [0.5, 2.0] and slider.value == 0.25


def test_shown_is_a_read_only_documented_view_of_the_state_shown():
    class State:
        eps = 0.3

    class Viewer:
        def __init__(self):
            self._state = State()

        state = shown("_state", "The last good state.")
        eps = shown("_state.eps", "The eps now shown.")

    v = Viewer()
    assert v.state is v._state and v.eps == 0.3
    assert Viewer.eps.__doc__ == "The eps now shown."
    v._state = type("Other", (), {"eps": 1.5})()
    assert v.eps == 1.5  # read at access: a new state shows at once
    with pytest.raises(AttributeError):
        v.eps = 2.0


class _Owner:
    """A widget's bare bones: the quiet flag, a message label, one setting ``n`` and its box."""

    def __init__(self) -> None:
        self._quiet, self.n, self.message = False, 1, message_label()
        self.box, self.calls, self.drawn = widgets.IntText(value=1), [], 0
        send_values(self, self.calls.append, self.box)

    def redraw(self) -> None:
        self.drawn += 1


def test_put_back_moves_the_control_back_quietly_and_says_why():
    owner = _Owner()
    owner.box.value = 7  # the reader's bad input: its callback ran once
    assert put_back(owner, owner.box, owner.n, ValueError("n is odd."), "Kept") is False
    assert owner.box.value == 1 and owner.calls == [7]
    assert "n is odd. Kept." in owner.message.value


def test_kept_on_error_restores_the_attributes_and_lets_the_error_through():
    owner = _Owner()
    with pytest.raises(RuntimeError), kept_on_error(owner, "n", "drawn"):
        owner.n, owner.drawn = 5, 9
        raise RuntimeError
    assert (owner.n, owner.drawn) == (1, 0)
    with kept_on_error(owner, "n"):
        owner.n = 3
    assert owner.n == 3


def test_try_setting_redraws_good_input_and_keeps_the_old_setting_on_bad():
    owner = _Owner()

    def check(v):
        return lambda: checked_index(v, 4, "n")

    def compute():
        if owner.n == 3:
            raise RuntimeError("cannot compute at 3")

    ok = try_setting(owner, "n", check(2), owner.box, "Kept", compute=compute, redraw=owner.redraw)
    assert ok and owner.n == 2 and owner.drawn == 1 and owner.message.value == ""
    for bad in (9, 3):  # rejected by the check, then by the computation
        owner.box.value = bad
        kw = dict(compute=compute, redraw=owner.redraw)
        assert not try_setting(owner, "n", check(bad), owner.box, "Kept", **kw)
        assert owner.n == 2 and owner.box.value == 2 and owner.drawn == 1
        assert "Kept." in owner.message.value


def test_checked_choice_names_the_options_and_refuses_bools():
    assert checked_choice(3, [1, 3], "NFE") == 3
    with pytest.raises(ValueError, match=r"NFE must be one of \[1, 3\], got 2"):
        checked_choice(2, [1, 3], "NFE")
    with pytest.raises(ValueError, match=r"digit must be one of 0..9, got True"):
        checked_choice(True, range(10), "digit", "0..9")
