"""The step plumbing the step-through widgets share: slider, Play and prev/next buttons.

A widget mixing in :class:`StepControls` has ``slider``, ``message``, ``n_steps``,
``_step`` and ``step_to(i)``; the mixin routes slider moves and button clicks to
``step_to`` with errors shown in ``message``, and moves the slider when code steps.
"""

from __future__ import annotations

from typing import Any

from pflow_explore.widgets.messages import shown_errors


class StepControls:
    _quiet = False  # True while the widget moves its own slider

    @property
    def step(self) -> int:
        """The step (or frame) i now shown, 0 .. ``n_steps``."""
        return self._step

    def _follow_slider(self, i: int) -> None:
        """Put the slider on step i without stepping again."""
        if self.slider.value != i:
            self._quiet = True
            try:
                self.slider.value = i
            finally:
                self._quiet = False

    def _guarded_step(self, i: int) -> None:
        with shown_errors(self.message, clear=False):
            self.step_to(min(max(int(i), 0), self.n_steps))

    def _on_slider(self, change: dict[str, Any]) -> None:
        if not self._quiet and change["new"] != self._step:
            self._guarded_step(change["new"])
