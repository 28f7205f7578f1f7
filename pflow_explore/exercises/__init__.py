"""Exercises with automatic checks, one convention for every chapter.

The learner writes a function in the notebook; the chapter's :class:`Exercise` compares it
with the package's own implementation (the *reference*) on random inputs and says what
differs (:func:`check`). Where things live:

- ``pflow_explore/exercises/<chapter slug>.py``: the chapter's exercises, each an
  :class:`Exercise` (its name, the learner's function name, the random inputs, the
  reference). The reference is the package function the chapter itself uses (or a few lines
  composing package functions), never a copy of the worked answer.
- ``solutions/<NN_slug>.py`` (repository root, outside the package, so not on a learner's
  import path): the worked answers, one function per exercise under the learner's function
  name. ``tests/test_solutions.py`` checks that every exercise has one, that it passes, and
  that a wrong answer fails.

In a notebook::

    from pflow_explore.exercises import painters as ex

    def gaussian_denoiser(x, sigma, mean, lam, U):
        ...

    ex.GAUSSIAN_DENOISER.check(gaussian_denoiser)
"""

from __future__ import annotations

from pflow_explore.exercises.check import CheckResult, Exercise, chapter_exercises, check

__all__ = ["CheckResult", "Exercise", "chapter_exercises", "check"]
