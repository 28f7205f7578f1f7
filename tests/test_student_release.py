"""Instructor source and student release (pflow_explore.student_release, nbgrader): the
source's exercise cells are well formed, the release has no answers and no hidden tests,
and it runs at tiny with every exercise reported as not written yet."""

from __future__ import annotations

import nbformat
import pytest

from pflow_explore import cli, course
from pflow_explore import student_release as sr

SOURCES = sorted(course.notebooks_dir().glob("*.ipynb"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_source_exercise_cells_are_well_formed(path):
    assert sr.source_problems(nbformat.read(path, as_version=4)) == []


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    nb.cells = list(cells)
    return nb


def test_problems_are_found():
    unmarked = sr.solution_cell("def f():\n    return 1", "f")  # no markers
    stray = nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")
    untagged = sr.grade_cell("assert True", "f")  # duplicate id, and the tag removed
    untagged.metadata["tags"] = []
    problems = " | ".join(sr.source_problems(_nb(unmarked, stray, untagged)))
    assert "without an answer between markers" in problems
    assert "not marked as a solution" in problems
    assert "needs the tag 'raises-exception'" in problems
    assert "'f' missing or used twice" in problems


def test_release_has_no_answers_and_no_hidden_tests(tmp_path):
    written = sr.write_release(tmp_path)
    assert {p.name for p in written} == {p.name for p in SOURCES}
    for path in written:
        text = path.read_text()
        hidden = "LINEAR_VELOCITY.grade(linear_velocity, seed=11"
        for marker in (sr.BEGIN_SOLUTION, sr.END_SOLUTION, sr.BEGIN_HIDDEN, hidden):
            assert marker not in text, f"{path.name} still holds {marker!r}"
    start = nbformat.read(tmp_path / "00_start_here.ipynb", as_version=4)
    text = "\n".join(c.source for c in start.cells)
    assert "return (x - D) / t" not in text and "raise NotImplementedError()" in text
    assert all(not c.get("outputs") for c in start.cells if c.cell_type == "code")


def test_release_refuses_to_overwrite_the_source():
    with pytest.raises(ValueError, match="must not overwrite"):
        sr.write_release(course.notebooks_dir())


def test_cli_student_writes_the_release(tmp_path, capsys):
    assert cli.main(["student", "--out", str(tmp_path / "rel")]) == 0
    assert (tmp_path / "rel" / "00_start_here.ipynb").exists()
    assert "student release" in capsys.readouterr().out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("slug", list(course.notebooks()))
def test_release_runs_at_tiny_with_exercises_not_written(slug, site_pages):
    """A student's notebook before any exercise is done, as the course site runs it (the
    student release, widgets shown statically): it runs to the end (the grade cells fail,
    tagged to run on), every check says "not written yet", and where the chapter uses an
    exercise it says it runs the package's reference."""
    nb = site_pages.executed(course.notebooks()[slug].stem)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        text = "".join(
            o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
            for o in cell.get("outputs", [])
        )
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if cell.metadata.get("nbgrader", {}).get("grade"):
            assert errors and "not written yet" in errors[0].evalue, cell.source
        else:
            assert not errors, f"{slug}: {errors[0].ename}: {errors[0].evalue}"
        if ".check(" in cell.source:
            assert "not written yet" in text, cell.source
        if ".use(" in cell.source:
            assert "runs the package's" in text, cell.source
