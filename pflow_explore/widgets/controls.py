"""Small helpers for the controls every explorer builds and moves.

A widget moves its own controls when code (not the reader) changes a setting; a flag on the
widget (``_quiet`` by default) tells the controls' callbacks to do nothing meanwhile, so a
setter is not re-entered. ``checked_index`` is the one check of a step, frame or index;
``checked_number`` the one check of a finite number with a lower bound typed into a box,
``checked_choice`` the one check of a value picked from a list.
``send_values`` routes a control's new values to the widget's setter; ``shown`` declares a
read-only attribute that reads what the widget now shows. A setter that fails keeps the
last good state: ``kept_on_error`` restores the attributes it had assigned, ``put_back``
moves the rejected control back and says why; ``try_setting`` is a whole setter of one
setting made of them.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ipywidgets as widgets

from pflow_explore.widgets.messages import show_rejected, shown_errors


@contextmanager
def quietly(owner: Any, flag: str = "_quiet") -> Iterator[None]:
    """Set ``owner.<flag>`` True inside the block: callbacks that check it do nothing, so
    the widget can move its own controls without re-entering its setters."""
    setattr(owner, flag, True)
    try:
        yield
    finally:
        setattr(owner, flag, False)


def checked_index(i: Any, last: int, name: str = "step") -> int:
    """i as an int if it is an integer in [0, last] (not a bool); ValueError naming ``name``."""
    if isinstance(i, bool) or int(i) != i or not 0 <= i <= last:
        raise ValueError(f"{name} must be an integer in [0, {last}], got {i!r}")
    return int(i)


def checked_number(
    x: Any, name: str, low: float, *, above: bool = False, what: str = "a finite number"
) -> float:
    """x as a float if it is a finite real number (not a bool: True is not 1 here) >= low,
    or > low with ``above``; else ValueError "<name> must be <what> >= low, got x"."""
    ok = not isinstance(x, bool) and isinstance(x, numbers.Real) and math.isfinite(x)
    if not (ok and (x > low if above else x >= low)):
        raise ValueError(f"{name} must be {what} {'>' if above else '>='} {low:g}, got {x!r}")
    return float(x)


def checked_choice(value: Any, options: Any, name: str, described: str | None = None) -> Any:
    """value if it is one of ``options`` (not a bool: True is not 1 here); else ValueError
    "<name> must be one of <options, or ``described``>, got value"."""
    if isinstance(value, bool) or value not in options:
        listed = options if described is None else described
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return value


def send_values(
    owner: Any, setter: Callable[[Any], Any], *controls: widgets.Widget, flag: str = "_quiet"
) -> None:
    """Call ``setter(new value)`` whenever one of ``controls`` changes its value, unless
    ``owner.<flag>`` is set (the widget is moving its own controls, see :func:`quietly`):
    the reader's move of a control becomes a call of the widget's public setter."""

    def send(change: dict[str, Any]) -> None:
        if not getattr(owner, flag):
            setter(change["new"])

    for control in controls:
        control.observe(send, names="value")


def set_quietly(owner: Any, control: widgets.ValueWidget, value: Any, flag: str = "_quiet") -> None:
    """Move ``control`` to ``value`` (if it is elsewhere) inside :func:`quietly`, so its
    callback does not run."""
    if control.value != value:
        with quietly(owner, flag):
            control.value = value


def put_back(
    owner: Any, control: widgets.ValueWidget, value: Any, error: BaseException | None, keeps: str
) -> bool:
    """Rejected input in ``control``: move it back to ``value`` (the setting still shown,
    quietly, see :func:`set_quietly`) and say in ``owner.message`` why and what stays
    (:func:`~pflow_explore.widgets.messages.show_rejected`). Returns False, so a setter can
    end with ``return put_back(...)``."""
    set_quietly(owner, control, value)
    return show_rejected(owner.message, error, keeps)


@contextmanager
def kept_on_error(owner: Any, *names: str) -> Iterator[None]:
    """A setter assigns ``owner``'s attributes ``names`` inside the block and computes with
    them; if the block raises, they get their old values back before the exception goes on,
    so the widget keeps the last good setting."""
    old = [getattr(owner, name) for name in names]
    try:
        yield
    except BaseException:
        for name, value in zip(names, old, strict=True):
            setattr(owner, name, value)
        raise


def try_setting(
    owner: Any,
    name: str,
    check: Callable[[], Any],
    control: widgets.ValueWidget,
    keeps: str,
    *,
    compute: Callable[[], Any],
    redraw: Callable[[], Any],
) -> bool:
    """A whole setter of one setting: ``owner.<name> = check()`` (``check`` raises ValueError
    on bad input), then ``compute()`` at the new setting, both inside
    :class:`~pflow_explore.widgets.messages.shown_errors` and :func:`kept_on_error`. On an
    error the setting keeps its old value, ``control`` goes back to it and ``owner.message``
    says why and ``keeps`` (:func:`put_back`): False. Otherwise ``redraw()``: True."""
    with shown_errors(owner.message) as outcome, kept_on_error(owner, name):
        setattr(owner, name, check())
        compute()
    if not outcome.ok:
        return put_back(owner, control, getattr(owner, name), outcome.error, keeps)
    redraw()
    return True


def shown(path: str, doc: str) -> property:
    """A read-only property that returns the widget's attribute at ``path`` (dotted, e.g.
    ``"_state.eps"``): how explorers expose what the figure now shows (the last good state
    and its parts) without a setter. ``doc``: the property's docstring, its shape and type."""
    return property(operator.attrgetter(path), doc=doc)
