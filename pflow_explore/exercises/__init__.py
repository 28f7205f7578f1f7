"""Exercises with automatic checks, one convention for every chapter.

The learner writes a function in the notebook; the chapter's :class:`Exercise` compares it
with the package's own implementation (the *reference*) on random inputs and says what
differs (:func:`check`). Where things live:

- ``pflow_explore/exercises/<chapter slug>.py``: the chapter's exercises, each an
  :class:`Exercise` (its name, the learner's function name, the random inputs, the
  reference). The reference is the package function the chapter itself uses (or a few lines
  composing package functions), never a copy of the worked answer.
- the worked answers: in the chapter's notebook (the instructor source) between nbgrader's
  ``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers, with an autograder cell calling
  :meth:`Exercise.grade` (``pflow_explore.student_release`` writes the student release
  without them), never in the package. ``tests/test_solutions.py`` checks that every
  exercise has one, that it passes, and that a near miss fails.

In a notebook::

    from pflow_explore.exercises import start_here as ex

    def euler_trajectory(v, x, times):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

    ex.EULER_TRAJECTORY.check(euler_trajectory)        # what differs, on random inputs
    integrate = ex.EULER_TRAJECTORY.use(euler_trajectory)  # the chapter runs it from here

and in the next cell (autograded, hidden tests stripped from the release)::

    ex.EULER_TRAJECTORY.grade(euler_trajectory)
"""

from __future__ import annotations

from pflow_explore.exercises.check import CheckResult, Exercise, chapter_exercises, check

__all__ = ["CheckResult", "Exercise", "chapter_exercises", "check"]
