"""Messages next to the controls, so bad input never becomes a traceback in a dashboard.

DESIGN.md, "Dashboards": bad input in a widget shows a clear message next to the control
and leaves the last good picture. The pattern in every explorer::

    self.message = message_label()
    ...
    with shown_errors(self.message) as outcome:
        new_data = compute(parameters)      # may raise
    if outcome.ok:
        redraw(new_data)                    # only good data reaches the figure
"""

from __future__ import annotations

import html
import logging
from types import TracebackType

import ipywidgets as widgets

log = logging.getLogger(__name__)

_STYLE = {
    "error": "color:#b00020; background:#fdecea; border-left:3px solid #b00020;",
    "warning": "color:#8a5a00; background:#fff4e5; border-left:3px solid #e69500;",
    "info": "color:#0b4f8a; background:#e8f1fb; border-left:3px solid #1f77b4;",
}


def message_html(text: str, kind: str = "error") -> str:
    """``text`` (escaped, so ``<`` in a message stays text) in a coloured box of ``kind``."""
    if kind not in _STYLE:
        raise ValueError(f"kind must be one of {', '.join(_STYLE)}, got {kind!r}")
    return f'<div style="{_STYLE[kind]} padding:2px 8px;">{html.escape(str(text))}</div>'


def message_label() -> widgets.HTML:
    """An empty HTML widget for messages; it takes no space until it shows one.

    It carries the CSS class ``pflow-message``, which the browser tests look for.
    """
    label = widgets.HTML(value="", layout=widgets.Layout(margin="2px 0 2px 0"))
    label.add_class("pflow-message")
    return label


def show_message(label: widgets.HTML, text: str, kind: str = "error") -> None:
    """Show ``text`` in ``label`` (a ``widgets.HTML``) as an error, warning or info box."""
    label.value = message_html(text, kind)


def show_rejected(label: widgets.HTML, error: BaseException | str | None, keeps: str) -> bool:
    """Say in ``label`` why input was rejected and what stays: ``"<reason>. <keeps>."``.

    ``error``: the exception (its text is the reason) or the reason itself; ``keeps``: a
    sentence such as ``"Showing the previous picture"``. Returns False, so a
    setter can end with ``return show_rejected(...)``.
    """
    show_message(label, f"{str(error).rstrip('.')}. {keeps}.")
    return False


def clear_message(label: widgets.HTML) -> None:
    """Remove the message from ``label``."""
    label.value = ""


def describe_error(err: BaseException) -> str:
    """One line for a reader: a ValueError's own message, else ``TypeName: message``."""
    if isinstance(err, ValueError) and str(err):
        return str(err)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class shown_errors:  # lower case: it reads as a function, ``with shown_errors(label):``
    """Context manager: an Exception inside is shown in ``label`` and swallowed.

    After the block, ``.ok`` says whether it ran without error and ``.error`` holds the
    exception. A clean run clears an old message when ``clear=True``. The traceback goes
    to the ``logging`` debug level, not to the notebook.
    """

    def __init__(self, label: widgets.HTML, clear: bool = True) -> None:
        self.label = label
        self.clear = clear
        self.error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __enter__(self) -> shown_errors:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if err is None:
            if self.clear:
                clear_message(self.label)
            return False
        if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: let them through
            return False
        self.error = err
        log.debug("error shown in a widget message", exc_info=(kind, err, tb))
        show_message(self.label, describe_error(err))
        return True
