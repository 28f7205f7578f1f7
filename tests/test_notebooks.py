"""Every notebook: committed without outputs, and executes at SCALE="tiny" with no error.

Notebooks are discovered (notebooks/NN_slug.ipynb), never listed here. Executed copies go
to test-artifacts/notebooks/ (git-ignored); seconds per notebook are printed at the end
of the session by conftest.py and kept in test-artifacts/notebook_timings.json.
"""

from __future__ import annotations

import json
import time

import nbformat
import pytest

from pflow_explore import course

NOTEBOOKS = course.notebooks()
ARTIFACTS = course.repo_root() / "test-artifacts"
TIMINGS: dict[str, float] = {}


def test_there_is_a_front_door():
    assert "start_here" in NOTEBOOKS


ALL_NOTEBOOKS = sorted(course.notebooks_dir().glob("*.ipynb"))  # the landing page too


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them"


@pytest.mark.parametrize("slug", list(NOTEBOOKS))
def test_has_parameters_cell(slug):
    nb = nbformat.read(NOTEBOOKS[slug], as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    assert "SCALE" in tagged[0].source


def _error_outputs(nb: nbformat.NotebookNode) -> list[str]:
    errors = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            elif out.get("name") == "stderr" and "Traceback" in out.get("text", ""):
                errors.append(f"cell {i}: traceback on stderr")
    return errors


@pytest.mark.timeout(300)
@pytest.mark.parametrize("slug", list(NOTEBOOKS))
def test_executes_at_tiny(slug, monkeypatch):
    import papermill

    out_dir = ARTIFACTS / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    src = NOTEBOOKS[slug]
    monkeypatch.setenv("PFLOW_SCALE", "cpu")  # the injected parameter must win over env
    start = time.perf_counter()
    papermill.execute_notebook(
        str(src),
        str(out_dir / src.name),
        parameters={"SCALE": "tiny"},
        kernel_name="python3",
        cwd=str(src.parent),
        progress_bar=False,
    )
    TIMINGS[src.name] = time.perf_counter() - start  # kernel start included
    (ARTIFACTS / "notebook_timings.json").write_text(json.dumps(TIMINGS, indent=1))
    nb = nbformat.read(out_dir / src.name, as_version=4)
    assert not _error_outputs(nb)
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "scale: tiny" in text, "the notebook must print the scale it ran at"
