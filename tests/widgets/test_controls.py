"""widgets.controls: moving a control without its callback, wiring named controls, index checks."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

from pflow_explore.widgets.controls import checked_index, on_values, quietly, set_quietly


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


def test_on_values_passes_the_name_and_the_new_value():
    seen = []
    a, b = widgets.IntText(), widgets.FloatText()
    on_values(lambda name, v: seen.append((name, v)), ("steps", a), ("guidance", b))
    a.value, b.value = 3, 0.5
    assert seen == [("steps", 3), ("guidance", 0.5)]
