"""Every chapter's exercises against the worked answers: in its instructor notebook between
nbgrader's markers (never in the package).

For each ``pflow_explore/exercises/<slug>.py``: every :class:`Exercise` has a worked answer
in the notebook under its function name, the answer passes the checker, and
the same answer slightly off (a negative control) fails it, so no exercise accepts anything.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import torch

import pflow_explore.exercises as exercises_pkg
from pflow_explore import course, student_release
from pflow_explore.exercises import chapter_exercises

SLUGS = sorted(m.name for m in pkgutil.iter_modules(exercises_pkg.__path__) if m.name != "check")


def _solutions(slug: str) -> SimpleNamespace:
    """The worked answers between nbgrader's markers in the chapter's instructor notebook."""
    nb = nbformat.read(course.notebooks()[slug], as_version=4)
    return SimpleNamespace(**student_release.answers(nb))


CASES = [
    (slug, ex)
    for slug in SLUGS
    for ex in chapter_exercises(importlib.import_module(f"pflow_explore.exercises.{slug}"))
]


def test_every_chapter_with_exercises_is_found():
    assert CASES, "no exercises found"


@pytest.mark.parametrize(("slug", "ex"), CASES, ids=[f"{s}-{e.function}" for s, e in CASES])
def test_solution_passes_and_a_near_miss_fails(slug, ex):
    answer = getattr(_solutions(slug), ex.function, None)
    assert answer is not None, f"solutions for {slug} lack {ex.function}()"
    res = ex.check(answer)
    assert res.passed, str(res)

    def near_miss(*args):
        out = torch.as_tensor(answer(*args))
        return out + 1e-3 * (1 + out.abs())

    assert not ex.check(near_miss).passed
    assert not ex.check(lambda *args: None).passed


def test_solutions_are_not_in_the_package():
    import pflow_explore

    package = Path(pflow_explore.__file__).parent
    assert not list(package.rglob("solution*")), "worked answers belong in the instructor notebooks"
    holding = [p for p in package.rglob("*.py") if "def _solution" in p.read_text()]
    assert not holding, f"worked answers belong in the instructor notebooks, found in {holding}"
