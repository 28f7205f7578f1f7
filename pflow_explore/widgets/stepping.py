"""The step plumbing the step-through widgets share: slider, Play and prev/next buttons.

A widget mixing in :class:`StepControls` has ``message``, ``n_steps``, ``_step`` and
``_show_step(i)`` (draw step i); :meth:`StepControls.step_to` checks i, shows it and moves
the slider; :meth:`StepControls.step_row` builds the row Play | Prev | Next | slider |
time label, routes slider moves and button clicks to ``step_to`` with errors shown in
``message``, and the other methods move the slider when code steps or the number of steps
changes, without stepping again.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from pflow_explore.widgets.controls import checked_index, quietly
from pflow_explore.widgets.messages import shown_errors

BUTTON_LAYOUT = {"width": "40px"}


class StepControls:
    """Mixin: the step row (:meth:`step_row`) and the slider bookkeeping of a stepper.

    The host provides ``n_steps`` (the last index), ``_step`` (the index shown), ``message``
    (a :func:`~pflow_explore.widgets.messages.message_label`) and ``_show_step(i)``, which
    draws step i (figure, time label, readout); :meth:`step_to` does the rest.
    """

    _quiet = False  # True while the widget moves its own slider
    step_noun = "step"  # what an index is called in messages ("frame", "state")
    # Also move the kernel-side Play value when code steps (Play is jslinked to the slider
    # in the browser only), for widgets whose code reads ``play.value``.
    play_follows = False

    @property
    def step(self) -> int:
        """The step (or frame) i now shown, 0 .. ``n_steps``."""
        return self._step

    def step_to(self, i: int) -> None:
        """Show step i in [0, n_steps] (ValueError naming ``step_noun`` otherwise): the
        widget's ``_show_step(i)`` draws it in place, then the slider follows. If drawing
        fails, ``step`` stays the last step drawn and the error propagates."""
        i = checked_index(i, self.n_steps, self.step_noun)
        previous, self._step = self._step, i  # set first: _show_step may read self._step
        try:
            self._show_step(i)
        except Exception:
            self._step = previous
            raise
        self._follow_slider(i, play=self.play_follows)

    def _show_step(self, i: int) -> None:
        raise NotImplementedError("a StepControls widget draws its step i in _show_step(i)")

    def step_row(
        self,
        interval_ms: int,
        noun: str = "step",
        value: int = 0,
        slider_width: str | None = "360px",
        time_label: type[widgets.Widget] = widgets.HTML,
        disabled: bool = False,
        last: int | None = None,
    ) -> widgets.HBox:
        """Build and wire the row Play | Prev | Next | slider | time label over 0 .. n_steps.

        - ``self.slider`` (an ``IntSlider`` described as ``noun``, the widget's first
          slider) picks the step i shown; moving it calls ``step_to(i)``;
        - ``self.play`` steps the slider every ``interval_ms`` ms; it is linked to the slider
          in the browser (``self.play_link``), so playing needs no round trip to the kernel;
        - ``self.prev_button`` / ``self.next_button`` show step i - 1 / i + 1 (clamped to
          the range; errors go to ``self.message``, never a traceback);
        - ``self.time_label`` (a ``time_label`` widget, HTML or Label) is left for the
          widget to fill with the time of step i.

        ``last`` is the range's end where ``n_steps`` is not known yet (default n_steps).
        """
        last = self.n_steps if last is None else last
        layout = widgets.Layout(width=slider_width) if slider_width else widgets.Layout()
        self.slider = widgets.IntSlider(
            value=value, min=0, max=last, description=noun, disabled=disabled, layout=layout
        )
        self.play = widgets.Play(value=value, min=0, max=last, step=1, interval=int(interval_ms))
        self.play_link = widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.prev_button = widgets.Button(
            icon="step-backward", tooltip=f"previous {noun}", layout=BUTTON_LAYOUT
        )
        self.next_button = widgets.Button(
            icon="step-forward", tooltip=f"next {noun}", layout=BUTTON_LAYOUT
        )
        self.time_label = time_label()
        self.slider.observe(self._on_slider, names="value")
        self.prev_button.on_click(lambda _: self._guarded_step(self._step - 1))
        self.next_button.on_click(lambda _: self._guarded_step(self._step + 1))
        return widgets.HBox(
            [self.play, self.prev_button, self.next_button, self.slider, self.time_label]
        )

    def _follow_slider(self, i: int, play: bool = False) -> None:
        """Put the slider (and with ``play`` the Play control) on step i without stepping
        again."""
        if self.slider.value != i:
            with quietly(self):
                self.slider.value = i
                if play:
                    self.play.value = i

    def _fit_step_range(self) -> None:
        """Slider and Play span 0 .. n_steps and stand on ``_step``, without stepping.

        Lowering ``max`` clamps ``value``: when the range grows, widen it first; when it
        shrinks, move to the new step first, so nothing is ever out of range on the way.
        """
        last = self.n_steps
        with quietly(self):
            if last >= self.slider.max:
                self.slider.max = self.play.max = last
                self.slider.value = self.play.value = self._step
            else:
                self.slider.value = self.play.value = self._step
                self.slider.max = self.play.max = last

    def _guarded_step(self, i: int) -> None:
        with shown_errors(self.message, clear=False):
            self.step_to(min(max(int(i), 0), self.n_steps))

    def _on_slider(self, change: dict[str, Any]) -> None:
        if not self._quiet and change["new"] != self._step:
            self._guarded_step(change["new"])
