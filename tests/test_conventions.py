"""One time convention per module, said in one standard phrase.

The course has two time directions (docs/papers.md, "Notation"): the diffusion one (t = 0
data, t = 1 noise; sampling runs down) and the flow one (t = 0 the source or noise, t = 1
the target or data; sampling runs up); EDM-style code uses the noise level sigma itself
as time, the particle chapters physical time, and generic code (solvers, nets, plots)
takes whatever its caller passes. Every module with a function or method taking a time
argument names which, in its docstring, as ``Time convention: <one of these>``, so a
reader never has to guess and a module cannot silently mix two.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pflow_explore"
KINDS = ("diffusion", "flow", "noise level", "physical time", "the caller's")
PHRASE = re.compile(r"Time convention: (" + "|".join(re.escape(k) for k in KINDS) + r")\b")
TIME_ARGS = {"t", "t0", "t1", "times"}


def _takes_time(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
            if names & TIME_ARGS:
                return True
    return False


MODULES = sorted(
    p for p in PACKAGE.rglob("*.py") if _takes_time(ast.parse(p.read_text(), filename=str(p)))
)


def test_modules_with_time_are_found():
    names = {p.name for p in MODULES}
    assert {"paths.py", "flow_matching.py", "solvers.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_each_module_with_time_names_its_convention(path):
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    found = PHRASE.findall(doc)
    assert found, (
        f"{path.relative_to(PACKAGE)} takes a time argument but its docstring lacks "
        f"'Time convention: <{' | '.join(KINDS)}>'"
    )
    assert len(set(found)) == 1, f"{path.name} names two conventions: {found}"
