"""Instructor source and student release of the notebooks, with nbgrader's conventions.

The notebooks in ``notebooks/`` are the *instructor source*. An exercise is two cells:

- a solution cell (metadata ``nbgrader.solution``): the learner's function, its answer
  between ``### BEGIN SOLUTION`` and ``### END SOLUTION``, then the visible check
  (``ex.NAME.check(fn)``), and, for the chapter's core loop, ``fn = ex.NAME.use(fn)``, so
  the chapter runs the learner's code from there on;
- an autograder cell (``nbgrader.grade``, points, locked, tagged ``raises-exception`` so a
  notebook with unwritten exercises still runs to its end): ``ex.NAME.grade(fn)``, with
  hidden tests (other seeds, more trials) between ``### BEGIN HIDDEN TESTS`` and
  ``### END HIDDEN TESTS``.

:func:`write_release` (``pflow-explore student``, ``make student``) writes the *student
release*: nbgrader's own preprocessors replace each answer by ``raise
NotImplementedError()``, drop the hidden tests and clear outputs. The release is what
students get (JupyterHub copies it into their folders); the answers are nowhere in it and
nowhere in the package. :func:`source_problems` checks the source's markers and metadata.
nbgrader's course tools (``nbgrader generate_assignment``, ``autograde``) work on the same
notebooks for an instructor who grades with them.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat

from pflow_explore import course

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
RAISES = "raises-exception"  # nbclient / papermill run on past a cell with this tag
SCHEMA_VERSION = 3  # nbgrader's cell metadata schema


def _metadata(grade_id: str, *, solution: bool, points: int = 0) -> dict:
    """nbgrader's cell metadata: a solution cell, or a locked grade cell worth ``points``."""
    meta = {"grade": not solution, "grade_id": grade_id, "locked": not solution}
    meta |= {"points": points} if not solution else {}
    return meta | {"schema_version": SCHEMA_VERSION, "solution": solution}


def solution_cell(source: str, grade_id: str) -> nbformat.NotebookNode:
    """A code cell holding a learner's answer between the solution markers."""
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = _metadata(grade_id, solution=True)
    return cell


def grade_cell(source: str, grade_id: str, points: int = 1) -> nbformat.NotebookNode:
    """A locked autograder cell worth ``points``; it raises when the answer is wrong."""
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = _metadata(grade_id, solution=False, points=points)
    cell.metadata["tags"] = [RAISES]
    return cell


def _nbgrader(cell: nbformat.NotebookNode) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def source_problems(nb: nbformat.NotebookNode) -> list[str]:
    """What is wrong with an instructor notebook's exercises (empty: nothing).

    Markers only in the cells meant for them and balanced; every solution and grade cell
    has a unique grade_id; grade cells are locked, worth points and tagged to run on."""
    problems, ids = [], []
    for i, cell in enumerate(nb.cells):
        meta, src = _nbgrader(cell), cell.source
        where = f"cell {i}"
        if BEGIN_SOLUTION in src or END_SOLUTION in src:
            if not meta.get("solution"):
                problems.append(f"{where}: solution markers in a cell not marked as a solution")
            if src.count(BEGIN_SOLUTION) != src.count(END_SOLUTION):
                problems.append(f"{where}: unbalanced solution markers")
        if BEGIN_HIDDEN in src or END_HIDDEN in src:
            if not meta.get("grade"):
                problems.append(f"{where}: hidden tests in a cell that is not graded")
            if src.count(BEGIN_HIDDEN) != src.count(END_HIDDEN):
                problems.append(f"{where}: unbalanced hidden-test markers")
        if meta.get("solution") and BEGIN_SOLUTION not in src:
            problems.append(f"{where}: a solution cell without an answer between markers")
        if meta.get("grade"):
            if not meta.get("locked") or not meta.get("points", 0) > 0:
                problems.append(f"{where}: a grade cell must be locked and worth points")
            if RAISES not in cell.metadata.get("tags", []):
                problems.append(f"{where}: a grade cell needs the tag {RAISES!r}")
        if meta:
            ids.append(meta.get("grade_id", ""))
    problems += [
        f"grade_id {g!r} missing or used twice" for g in set(ids) if not g or ids.count(g) > 1
    ]
    return problems


def answers(nb: nbformat.NotebookNode) -> dict[str, Callable[..., Any]]:
    """The worked answers of an instructor notebook, by function name: every function
    defined in its solution cells, compiled on its own with ``torch`` and ``math`` in scope
    (answers must not lean on other cells). For tests that run each answer through its
    exercise's checker, and a near miss of it."""
    import math

    import torch

    found: dict[str, Callable[..., Any]] = {}
    for cell in nb.cells:
        if not _nbgrader(cell).get("solution"):
            continue
        tree = ast.parse(cell.source)
        defs = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
        scope: dict[str, Any] = {"torch": torch, "math": math}
        exec(compile(ast.Module(body=defs, type_ignores=[]), "<answer>", "exec"), scope)
        found.update({node.name: scope[node.name] for node in defs})
    return found


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The release of one notebook: answers stubbed, hidden tests removed, outputs cleared
    (nbgrader's ClearSolutions, ClearHiddenTests, ClearOutput)."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions

    nb = nbformat.from_dict(nb)  # a copy
    resources: dict = {}
    for step in (ClearSolutions(), ClearHiddenTests(), ClearOutput()):
        nb, resources = step.preprocess(nb, resources)
    return nb


def write_release(out: Path, source: Path | None = None) -> list[Path]:
    """The student release of every notebook of ``source`` (default: notebooks/) into
    ``out``; returns the written paths. Refuses a source with broken exercise cells."""
    source = Path(source or course.notebooks_dir())
    out = Path(out)
    if out.resolve() == source.resolve():
        raise ValueError(f"the release must not overwrite the instructor source {source}")
    written = []
    for path in sorted(source.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        problems = source_problems(nb)
        if problems:
            raise ValueError(f"{path.name}: " + "; ".join(problems))
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(student_version(nb), out / path.name)
        written.append(out / path.name)
    return written
